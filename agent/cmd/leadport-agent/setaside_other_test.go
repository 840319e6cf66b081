//go:build !linux

package main

func agentHoldsStore(string) error { return nil }
