"""The Kubernetes side of flopwise: runs as Jobs (`jobs`: pure manifests; `executor`: create and observe them)
and the kopf handlers (`handlers`) that drive the same campaign engine `flopwise run` drives locally."""
