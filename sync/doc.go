// Package sync carries records to the platform over MQTT and takes its
// signed commands: store-and-forward batches up, commands down, receipts
// up, a retained status with a last will.
//
// The package shares its name with the standard library's sync; inside it,
// the standard package is imported as gosync (bbolt does the same with its
// errors package). sync never imports detect: a verified command goes to a
// handler that the agent provides.
//
// The client is in client.go (connection), upload.go (the outbox) and
// commands.go (commands and policies); sync/command verifies and signs
// commands.
package sync
