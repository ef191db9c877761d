"""How the system runs: the embedded single-machine stack (``python -m deploy.embedded``);
Dockerfile, compose file and Kubernetes manifests for scale-out live beside it."""
