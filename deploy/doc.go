// Package deploy holds the deployment files of the attestation service
// (`verifier serve`): a systemd unit (systemd/) and Kubernetes manifests
// (kubernetes/). Its test decodes the manifests strictly with the
// k8s.io/api types and checks their security and probe settings; the
// verifier's own tests parse their arguments with the serve flag set.
package deploy
