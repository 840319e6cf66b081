//go:build !linux

package service

func agentHoldsStore(string) error { return nil }
