"""Lethe: retention for NFS and S3, enforced by a Raft-led Kubernetes operator."""

__version__ = "0.1.0"
