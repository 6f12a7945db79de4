"""Layer 3: the replicated journal over Raft (pysyncobj), kept behind a narrow interface.

Use :class:`lethe.raft.node.RaftJournal` (implements
:class:`lethe.journal.Journal`); build one from the `lethe run` settings with
:func:`lethe.raft.discovery.discover` and
:func:`lethe.raft.security.resolve_password`. Import from the modules: this
package imports nothing, so `lethe apply` (a one-node journal) does not pay
for the operator's HTTP and metrics modules at start-up.
"""
