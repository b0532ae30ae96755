// Package ratelimittest holds the process tests of the rate and stream
// limits (docs/LIMITS.md): three real authorityd processes on mutual TLS
// with low limits; one identity writing as fast as it can, denied
// promotions piling up on one domain, and one identity opening streams
// over all its connections, each refused with RESOURCE_EXHAUSTED and a
// retry delay while other identities and domains are unaffected, and the
// state holding exactly what was accepted.
package ratelimittest
