"""Bad input from every side: CRs, hostile storage, S3 faults, the Raft port."""
