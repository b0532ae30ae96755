// Package render is the stable text and JSON forms of the log's records
// shared by the server and authorityctl: the explanation artifact of an
// attempt (Explain, ExplanationJSON) and an event's JSON line (EventLine).
// Pure: std and the API messages only (internal/archtest), so the CLI
// renders what the server does without linking the server.
package render
