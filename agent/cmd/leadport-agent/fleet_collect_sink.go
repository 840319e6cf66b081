package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// fleet collect, the files: lines appended to DIR/<kind>/<YYYY-MM-DD>.jsonl
// (kind: a record type, or "rejected"), made durable by sync before any
// message they hold is acknowledged.
//
// Only whole lines are ever acknowledged, but a crash can leave the end of
// a line that was being written. The file is repaired when it is opened
// again: everything after its last newline is cut, which is never more
// than part of a batch the broker still holds for the session and will
// deliver again. One collector writes a directory at a time (lockDir), so
// the cut never touches another process's write.

// daySink owns the open files of one output directory. It is used by one
// goroutine (the writer) only.
type daySink struct {
	dir  string
	log  *slog.Logger
	lock io.Closer
	// files are the open files by kind/day; written, the files written
	// since the last sync; dirty, the directories whose entries changed
	// since then.
	files   map[string]*os.File
	written []*os.File
	dirty   map[string]bool
	// repaired counts the bytes cut from the ends of files opened again.
	repaired int64
}

// openSink creates dir if need be (0700: the records hold phone numbers)
// and locks it.
func openSink(dir string, log *slog.Logger) (*daySink, error) {
	s := &daySink{dir: dir, log: log, files: map[string]*os.File{}, dirty: map[string]bool{}}
	created, err := mkdir(dir)
	if err != nil {
		return nil, err
	}
	if created {
		s.dirty[filepath.Dir(dir)] = true
	}
	if s.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	// A directory made here is durable before anything in it is relied on.
	if err := s.sync(); err != nil {
		s.lock.Close()
		return nil, err
	}
	return s, nil
}

// mkdir makes dir with mode 0700 and reports whether it made it.
func mkdir(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrExist):
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return false, fmt.Errorf("%s is not a directory", dir)
		}
		return false, nil
	}
	return false, err
}

// append writes b (whole lines) at the end of kind/day.jsonl.
func (s *daySink) append(kind, day string, b []byte) error {
	f, err := s.file(kind, day)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if !slices.Contains(s.written, f) {
		s.written = append(s.written, f)
	}
	return nil
}

// file returns the open file of kind/day, creating or repairing it.
func (s *daySink) file(kind, day string) (*os.File, error) {
	key := kind + "/" + day
	if f := s.files[key]; f != nil {
		return f, nil
	}
	kdir := filepath.Join(s.dir, kind)
	created, err := mkdir(kdir)
	if err != nil {
		return nil, err
	}
	if created {
		s.dirty[s.dir] = true
	}
	path := filepath.Join(kdir, day+".jsonl")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		s.dirty[kdir] = true
	case errors.Is(err, fs.ErrExist):
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
			return nil, err
		}
		cut, err := repairTail(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if cut > 0 {
			s.repaired += cut
			s.log.Warn("fleet collect: cut a partial line from the end of a file (a write the crash interrupted; its batch was never acknowledged, so the broker delivers it again)",
				"file", path, "bytes", cut)
		}
	default:
		return nil, err
	}
	s.files[key] = f
	return f, nil
}

// repairTail cuts whatever follows the last newline of f, and makes the
// cut durable; it returns how many bytes it cut.
func repairTail(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if size == 0 {
		return 0, nil
	}
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		n := int64(len(buf))
		if n > end {
			n = end
		}
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end == size {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, err
	}
	return size - end, f.Sync()
}

// sync makes everything appended since the last sync durable: the files'
// contents, then the directory entries of files and directories created.
// Only then may the messages they hold be acknowledged.
func (s *daySink) sync() error {
	for _, f := range s.written {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
	}
	s.written = s.written[:0]
	// Deepest first: a new type directory's entry in DIR is synced after
	// the new file's entry in the type directory.
	dirs := slices.Sorted(maps.Keys(s.dirty))
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("fsync %s: %w", d, err)
		}
		delete(s.dirty, d)
	}
	return nil
}

// closeBefore closes the files of days before day (synced already).
func (s *daySink) closeBefore(day string) {
	for key, f := range s.files {
		if filepath.Base(key) < day && !slices.Contains(s.written, f) {
			f.Close()
			delete(s.files, key)
		}
	}
}

// close syncs and closes every file and releases the directory.
func (s *daySink) close() error {
	err := s.sync()
	for key, f := range s.files {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
		delete(s.files, key)
	}
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}
