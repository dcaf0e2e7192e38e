package storage

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// LocalConfig configures a Bucket over a local directory (NewLocal).
type LocalConfig struct {
	// Root is the directory holding the objects: key "a/b.jpg" is the file Root/a/b.jpg.
	// Required. A relative path is made absolute against the working directory by
	// NewLocal.
	Root string
	// Create makes Root, with its parents, when it does not exist. Default false: a
	// missing Root is an error.
	Create bool
}

// NewLocal returns a Bucket over the directory cfg.Root. Keys are slash-separated paths
// under Root; a key that would leave Root ("../x", "/etc/passwd", "a/../../b"), or go
// through a symbolic link leading out of it, is refused with an error wrapping
// ErrInvalidKey (see ValidateKey for the full rule). Put is atomic (a temporary file in
// the target's directory, then a rename). The ETag is derived from the file's size,
// modification time (in nanoseconds, set by Put) and inode, so it changes whenever Put
// replaces the content. The content type is guessed from the key's extension
// (PutOptions.ContentType is not kept). Put does not fsync (as go-cloud's fileblob): a
// crash of the machine, not of the process, may lose the latest Puts. A file and a directory cannot share a name, so
// "a" and "a/b" cannot both exist; Delete removes directories left empty.
func NewLocal(cfg LocalConfig) (*Bucket, error) {
	if cfg.Root == "" {
		return nil, errors.New("storage: local root directory is empty")
	}
	abs, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("storage: local root %q: %w", cfg.Root, err)
	}
	if cfg.Create {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("storage: create local root: %w", err)
		}
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("storage: local root %q does not exist (create it, or set Create / create=true)", abs)
	case err != nil:
		return nil, fmt.Errorf("storage: local root: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("storage: local root %q is not a directory", abs)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: open local root: %w", err)
	}
	return newBucket(&localDriver{root: root, dir: abs}, ""), nil
}

// localDriver stores objects as files under a directory, confined to it by os.Root.
type localDriver struct {
	root *os.Root
	dir  string // absolute, cleaned
}

var _ driver = (*localDriver)(nil)

// errorf builds an error naming the operation, the key and the directory.
func (d *localDriver) errorf(op, key string, sentinel error, detail error) error {
	if sentinel == nil {
		return fmt.Errorf("storage: %s %q in local dir %q: %w", op, key, d.dir, detail)
	}
	if detail == nil {
		return fmt.Errorf("storage: %s %q in local dir %q: %w", op, key, d.dir, sentinel)
	}
	return fmt.Errorf("storage: %s %q in local dir %q: %w (%v)", op, key, d.dir, sentinel, plainErr(detail))
}

// plainErr drops the path of an *fs.PathError (the message already names the key).
func plainErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// translate maps an OS error to the package's sentinels.
func (d *localDriver) translate(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return d.errorf(op, key, ErrNotFound, nil)
	case errors.Is(err, fs.ErrPermission):
		return d.errorf(op, key, ErrAccessDenied, err)
	case isEscape(err):
		return d.errorf(op, key, ErrInvalidKey, errors.New("the path leads out of the root directory"))
	}
	return d.errorf(op, key, nil, plainErr(err))
}

// isEscape reports whether err is os.Root refusing a path that leaves the root (through a
// symbolic link; ".." is refused before).
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "escapes from parent")
}

// path checks key for the directory layout.
func (d *localDriver) path(op, key string) (string, error) {
	if err := checkPathKey(key); err != nil {
		return "", fmt.Errorf("storage: %s in local dir %q: %w", op, d.dir, err)
	}
	return key, nil
}

// attrs makes the Attributes of the file fi at key.
func (d *localDriver) attrs(key string, fi fs.FileInfo) Attributes {
	return Attributes{
		Key:         key,
		Size:        fi.Size(),
		ETag:        localETag(fi),
		ContentType: guessContentType(key),
		ModTime:     fi.ModTime().UTC(),
	}
}

// localETag derives an ETag from the file's size, modification time and inode.
func localETag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%d:%d", fi.Size(), fi.ModTime().UnixNano(), ino))
	return hex.EncodeToString(sum[:16])
}

func (d *localDriver) get(ctx context.Context, key string, opts GetOptions) (*Reader, error) {
	p, err := d.path("get", key)
	if err != nil {
		return nil, err
	}
	// Stat before opening: opening a FIFO or a device could block or misbehave.
	if fi, err := d.root.Stat(p); err != nil {
		return nil, d.translate("get", key, err)
	} else if !fi.Mode().IsRegular() {
		return nil, d.errorf("get", key, ErrNotFound, errors.New("not a regular file"))
	}
	f, err := d.root.Open(p)
	if err != nil {
		return nil, d.translate("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, d.translate("get", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, d.errorf("get", key, ErrNotFound, errors.New("not a regular file"))
	}
	a := d.attrs(key, fi)
	if opts.IfMatch != "" && opts.IfMatch != a.ETag {
		f.Close()
		return nil, d.errorf("get", key, ErrChanged, fmt.Errorf("ETag is %s, want %s", a.ETag, opts.IfMatch))
	}
	return &Reader{ReadCloser: f, Attributes: a}, nil
}

func (d *localDriver) stat(ctx context.Context, key string) (Attributes, error) {
	p, err := d.path("stat", key)
	if err != nil {
		return Attributes{}, err
	}
	fi, err := d.root.Stat(p)
	if err != nil {
		return Attributes{}, d.translate("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return Attributes{}, d.errorf("stat", key, ErrNotFound, errors.New("not a regular file"))
	}
	return d.attrs(key, fi), nil
}

func (d *localDriver) put(ctx context.Context, key string, r io.Reader, opts PutOptions) (err error) {
	p, err := d.path("put", key)
	if err != nil {
		return err
	}
	dir := path.Dir(p)
	var (
		f   *os.File
		tmp string
	)
	// A concurrent Delete may remove dir (left empty) between MkdirAll and OpenFile: retry.
	for attempt := 0; ; attempt++ {
		if dir != "." {
			if err := d.root.MkdirAll(dir, 0o755); err != nil {
				if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
					return d.errorf("put", key, nil, errors.New("a parent path is an object, not a directory"))
				}
				return d.translate("put", key, err)
			}
		}
		tmp = path.Join(dir, tempPrefix+rand.Text())
		f, err = d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 4 {
			return d.translate("put", key, err)
		}
	}
	defer func() {
		if err != nil {
			f.Close()
			d.root.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: r})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return d.errorf("put", key, cerr, nil)
		}
		return d.errorf("put", key, nil, fmt.Errorf("read content: %w", plainErr(err)))
	}
	if opts.Size > 0 && n != opts.Size {
		return d.errorf("put", key, nil, fmt.Errorf("content is %d bytes, not the %d given as its size", n, opts.Size))
	}
	if err = f.Close(); err != nil {
		return d.translate("put", key, err)
	}
	// Set the modification time with full precision, so that the ETag changes even when
	// the file system's clock is coarse.
	now := time.Now()
	if err = d.root.Chtimes(tmp, now, now); err != nil {
		return d.translate("put", key, err)
	}
	if err = d.root.Rename(tmp, p); err != nil {
		if fi, serr := d.root.Lstat(p); serr == nil && fi.IsDir() {
			return d.errorf("put", key, nil, errors.New("the key is a directory holding other objects"))
		}
		return d.translate("put", key, err)
	}
	return nil
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (d *localDriver) list(ctx context.Context, prefix string) iter.Seq2[Attributes, error] {
	return func(yield func(Attributes, error) bool) {
		// The directory to start from: prefix up to its last "/".
		dir := ""
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			dir = prefix[:i]
			if err := checkPathKey(dir); err != nil {
				yield(Attributes{}, fmt.Errorf("storage: list prefix %q in local dir %q: %w", prefix, d.dir, err))
				return
			}
		}
		d.walk(ctx, dir, prefix, yield)
	}
}

// walk yields the objects under directory dir ("" for the root) whose key starts with
// prefix, in lexical order of keys, recursing into subdirectories. It holds one
// directory's entries per level. It returns false when the walk must stop.
func (d *localDriver) walk(ctx context.Context, dir, prefix string, yield func(Attributes, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(Attributes{}, d.errorf("list prefix", prefix, err, nil))
		return false
	}
	name := dir
	if name == "" {
		name = "."
	}
	f, err := d.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return true // nothing under this prefix
		}
		yield(Attributes{}, d.translate("list prefix", prefix, err))
		return false
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return true
		}
		yield(Attributes{}, d.translate("list prefix", prefix, err))
		return false
	}
	// Sort as full keys sort: a directory "a" holds keys "a/…", so it sorts as "a/".
	sortName := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return cmp.Compare(sortName(a), sortName(b)) })
	for _, e := range entries {
		key := e.Name()
		if dir != "" {
			key = dir + "/" + key
		}
		if strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if e.IsDir() {
			sub := key + "/"
			if !strings.HasPrefix(sub, prefix) && !strings.HasPrefix(prefix, sub) {
				continue
			}
			if !d.walk(ctx, key, prefix, yield) {
				return false
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		var fi fs.FileInfo
		if e.Type()&fs.ModeSymlink != 0 {
			fi, err = d.root.Stat(key) // follow links that stay inside the root
		} else {
			fi, err = e.Info()
		}
		if err != nil || !fi.Mode().IsRegular() {
			continue // gone since ReadDir, a dangling or escaping link, a FIFO, …
		}
		if !yield(d.attrs(key, fi), nil) {
			return false
		}
	}
	return true
}

func (d *localDriver) delete(ctx context.Context, key string) error {
	p, err := d.path("delete", key)
	if err != nil {
		return err
	}
	fi, err := d.root.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return d.translate("delete", key, err)
	}
	if fi.IsDir() {
		return nil // a directory is not an object
	}
	if err := d.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.translate("delete", key, err)
	}
	// Remove the directories the object leaves empty, so that their names can be keys.
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if d.root.Remove(dir) != nil {
			break // not empty (or gone): stop
		}
	}
	return nil
}

func (d *localDriver) location(prefix string) string {
	p := filepath.ToSlash(d.dir)
	if prefix != "" {
		p = strings.TrimSuffix(p, "/") + "/" + strings.TrimSuffix(prefix, "/")
	}
	u := url.URL{Scheme: "file", Path: p}
	return u.String()
}

func (d *localDriver) name() string { return d.dir }

func (d *localDriver) close() error { return d.root.Close() }
