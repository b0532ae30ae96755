// Package conformance checks the deployment files of deploy/ (a module of
// its own, so that the Kubernetes and Helm libraries stay out of the
// server's module): the Kubernetes manifests and the Helm chart's rendered
// output decode strictly into the Kubernetes Go types and keep the
// invariants; the Dockerfile is multi-stage, static and non-root; the
// systemd unit passes systemd-analyze verify.
package conformance
