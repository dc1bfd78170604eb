"""Speed benchmarks of pmkd_tf; run each as `python -m benchmarks.<name>` from the repository root."""
