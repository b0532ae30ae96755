// Package accesstest holds the process tests of identity and access: three
// real authorityd processes on mutual TLS, attacked by hostile clients with
// nothing but the generated gRPC stubs and a certificate of the cluster's
// CA; membership changes and lost-quorum recovery; servers of another
// cluster; a data dir under a wrong node id; certificate rotation under
// load. Every refused attack must leave every server's state hash
// unchanged.
package accesstest
