// Package store keeps the agent's records in one bbolt file: an outbox per
// record type, the keys that encrypt personal fields, the subject index, the
// command ledger, the policy and device metadata.
//
// Personal fields (the remote party of a call, a consent subject, numbers in
// violation evidence, an export's result) never reach the file in clear: each
// is sealed with a data key that belongs to one data subject, and data keys
// are wrapped by a device key kept beside the file. Erasing a subject deletes
// its consent records, strips its fields from the other records, destroys its
// key and then rewrites the file, so neither live nor freed pages keep
// anything of it (crypto-shredding plus compaction).
//
// Appends are durable when they return. Concurrent appenders share one
// transaction and one fsync (group commit), so the SIP path can hand records
// over without each paying a disk flush of its own.
//
// The package imports nothing else of the agent's except store/phone.
package store
