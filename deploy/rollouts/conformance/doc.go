// Package conformance decodes the rollouts templates of deploy/rollouts
// strictly into Argo Rollouts' and Flagger's own Go types. It is a separate
// module so that the product module never depends on Kubernetes.
package conformance
