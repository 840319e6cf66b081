package store

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/chacha20poly1305"
)

// XChaCha20-Poly1305: constant-time and fast without AES instructions (the
// ARMv6/v7 and MIPS boxes this runs on have none), and its 24-byte random
// nonces never collide in practice, so no nonce counter has to survive
// crashes.
const (
	keySize   = KeySize
	nonceSize = chacha20poly1305.NonceSizeX
	sealOver  = nonceSize + chacha20poly1305.Overhead
)

// KeySize is the length of a device key file: the raw 256-bit key, nothing
// else.
const KeySize = chacha20poly1305.KeySize

// ErrNotDeviceKey is a file that cannot be a device key.
var ErrNotDeviceKey = errors.New("not a device key")

// CheckKeyFile says whether a file, by what stat tells of it, can be a
// device key: KeySize bytes. It reads nothing, so it answers for a key the
// caller may not read (doctor run by a technician); the error wraps
// ErrNotDeviceKey.
func CheckKeyFile(fi fs.FileInfo) error {
	if fi.Size() != KeySize {
		return fmt.Errorf("%d bytes, want %d: %w", fi.Size(), KeySize, ErrNotDeviceKey)
	}
	return nil
}

// subjectRef names a data subject inside the file: HMAC-SHA256 of the
// normalised subject under a key derived from the device key. It lets the
// store find a subject's records without holding its number.
type subjectRef [32]byte

// ErrWrongKey means the device key does not belong to the store file.
var ErrWrongKey = errors.New("device key does not match the store")

// deviceKeys holds the keys derived from the device key file.
type deviceKeys struct {
	wrap  []byte // wraps data keys
	index []byte // keys subject references
	check []byte // stored in meta to catch a swapped key file
}

func deriveKeys(master []byte) deviceKeys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, master)
		m.Write([]byte("leadport-agent store v1 " + label))
		return m.Sum(nil)
	}
	return deviceKeys{wrap: derive("wrap"), index: derive("subject-index"), check: derive("check")[:16]}
}

func (k deviceKeys) ref(subject string) subjectRef {
	m := hmac.New(sha256.New, k.index)
	m.Write([]byte(subject))
	var r subjectRef
	m.Sum(r[:0])
	return r
}

func (k deviceKeys) checkMatches(stored []byte) bool {
	return subtle.ConstantTimeCompare(stored, k.check) == 1
}

// wrapDataKey seals a data key under the device key, bound to its subject so
// a wrapped key copied to another subject's slot does not open.
func (k deviceKeys) wrapDataKey(ref subjectRef, dataKey []byte) ([]byte, error) {
	return seal(k.wrap, ref[:], dataKey)
}

func (k deviceKeys) unwrapDataKey(ref subjectRef, wrapped []byte) ([]byte, error) {
	dk, err := open(k.wrap, ref[:], wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	return dk, nil
}

func newKey() ([]byte, error) {
	k := make([]byte, keySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("random key: %w", err)
	}
	return k, nil
}

func seal(key, aad, plaintext []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+chacha20poly1305.Overhead)
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	return aead.Seal(out, out[:nonceSize], plaintext, aad), nil
}

func open(key, aad, sealed []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	return openWith(aead, nil, aad, sealed)
}

// openWith is open with the key's AEAD already made, the plaintext
// appended to dst: the drain keeps one AEAD per data key and one buffer
// for the plaintexts of a record.
func openWith(aead cipher.AEAD, dst, aad, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOver {
		return nil, fmt.Errorf("%w: sealed value of %d bytes", ErrCorrupt, len(sealed))
	}
	pt, err := aead.Open(dst, sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return pt, nil
}

// partAAD binds a sealed field to its record and subject, so that fields
// cannot be swapped between records unnoticed. The record's id is used
// without its sequence bytes, which the committer fills in after the field
// was sealed (see idSeqOffset): time, type and 32 random bits still tell
// records apart.
func partAAD(id [16]byte, ref subjectRef) []byte {
	var aad partAADBuf
	return aad.set(id, ref)
}

// partAADBuf holds a part's associated data; a reader that keeps one
// builds it without allocating (what goes through the AEAD interface
// escapes).
type partAADBuf [16 + len(subjectRef{})]byte

func (a *partAADBuf) set(id [16]byte, ref subjectRef) []byte {
	clear(id[idSeqOffset : idSeqOffset+idSeqLen])
	copy(a[:16], id[:])
	copy(a[16:], ref[:])
	return a[:]
}

// sealField encrypts one personal field: uvarint(len name) name value.
func sealField(dataKey []byte, id [16]byte, ref subjectRef, f Field) ([]byte, error) {
	pt := make([]byte, 0, binary.MaxVarintLen16+len(f.Name)+len(f.Value))
	pt = binary.AppendUvarint(pt, uint64(len(f.Name)))
	pt = append(append(pt, f.Name...), f.Value...)
	return seal(dataKey, partAAD(id, ref), pt)
}

func openField(dataKey []byte, id [16]byte, ref subjectRef, sealed []byte) (name string, value []byte, err error) {
	pt, err := open(dataKey, partAAD(id, ref), sealed)
	if err != nil {
		return "", nil, err
	}
	nm, value, err := splitField(pt)
	if err != nil {
		return "", nil, err
	}
	return string(nm), value, nil
}

// splitField takes apart an opened field: uvarint(len name) name value.
func splitField(pt []byte) (name, value []byte, err error) {
	n, w := binary.Uvarint(pt)
	if w <= 0 || uint64(len(pt)-w) < n {
		return nil, nil, fmt.Errorf("%w: personal field framing", ErrCorrupt)
	}
	return pt[w : w+int(n)], pt[w+int(n):], nil
}

// loadDeviceKey reads the device key, or creates it when create is set and
// the file does not exist. The key never leaves this file and memory.
func loadDeviceKey(path string, create bool) (key []byte, created bool, err error) {
	key, err = os.ReadFile(path)
	switch {
	case err == nil:
		if len(key) != keySize {
			return nil, false, fmt.Errorf("device key %s: %d bytes, want %d", path, len(key), keySize)
		}
		return key, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("device key: %w", err)
	case !create:
		return nil, false, fmt.Errorf("device key %s is missing, but the store holds data sealed with it: restore the key file, or move the store aside to start empty", path)
	}
	key, err = newKey()
	if err != nil {
		return nil, false, err
	}
	if err := writeFileSync(path, key, 0o600); err != nil {
		return nil, false, fmt.Errorf("create device key: %w", err)
	}
	return key, true, nil
}

// writeFileSync creates path exclusively with the given mode, writes data,
// fsyncs it and its directory, so a crash never leaves a half-written key.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		// Some platforms (Windows) cannot fsync a directory; there the
		// rename is as durable as the OS makes it.
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
