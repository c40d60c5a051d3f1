//go:build !unix

package main

// checkOwner is a no-op here: the Windows service and the commands run as
// administrators, and ACLs decide.
func checkOwner(string, string) error { return nil }
