# Shared fixtures live in tests/fixtures/ as pytest plugins; list each one here.
# kube: a real etcd + kube-apiserver for the session (or LETHE_TEST_KUBECONFIG).
# s3: a real S3-compatible server (moto) on loopback for the session.
pytest_plugins = ["tests.fixtures.kube", "tests.fixtures.s3"]
