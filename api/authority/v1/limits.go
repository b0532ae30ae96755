package authorityv1

// MaxRenewalsPerKeepAlive bounds the leases one KeepAlive message renews
// (KeepAliveRequest.domains): the server refuses a larger batch whole, and
// the client library splits its renewals into batches of at most this many.
const MaxRenewalsPerKeepAlive = 1024
