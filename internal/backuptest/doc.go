// Package backuptest holds the process test of backups (issue 18): a
// snapshot saved with authorityctl from a three-server cluster under write
// load, restored with authorityd --restore-from into a fresh three-server
// cluster, and damaged backups refused.
package backuptest
