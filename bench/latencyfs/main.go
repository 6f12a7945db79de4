// Command latencyfs mounts a directory through FUSE and makes every metadata
// operation wait a fixed delay first: an NFS-shaped filesystem for benchmarks.
//
// On NFS each metadata operation of the client is a round trip to the server
// (LOOKUP, GETATTR, READDIR, RENAME, REMOVE, ...). With attribute and entry
// caching off (entry, attribute and negative timeouts of 0, like an NFS mount
// with actimeo=0 and lookupcache=none) the kernel asks the FUSE server for
// every one of them, and this server sleeps -delay before answering each
// request listed in delayed() below. Requests are served concurrently, up to
// -concurrency at a time (go-fuse's reader goroutines, capped at 16), like an
// NFS client's RPC slots.
//
// SIGUSR1 writes the request counts since the last SIGUSR1 as JSON to -stats
// (atomically: a temporary file renamed into place) and resets them.
// SIGINT/SIGTERM unmount and exit.
//
// Usage: latencyfs -delay 2ms [-stats FILE] ORIGINAL MOUNTPOINT
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// delayedFS wraps go-fuse's loopback bridge; each overridden request sleeps
// first. Requests not overridden (FORGET, RELEASE, RELEASEDIR, FLUSH, INIT,
// INTERRUPT, STATFS) pass without delay: the kernel sends FORGET and RELEASE*
// asynchronously, and NFS has no round trip for them.
type delayedFS struct {
	fuse.RawFileSystem
	delay time.Duration

	mu     sync.Mutex
	counts map[string]int64
}

func (d *delayedFS) wait(op string) {
	d.mu.Lock()
	d.counts[op]++
	d.mu.Unlock()
	if d.delay > 0 {
		time.Sleep(d.delay)
	}
}

func (d *delayedFS) snapshot() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.counts
	d.counts = map[string]int64{}
	return out
}

func (d *delayedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	d.wait("LOOKUP")
	return d.RawFileSystem.Lookup(c, h, name, out)
}

func (d *delayedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	d.wait("GETATTR")
	return d.RawFileSystem.GetAttr(c, in, out)
}

func (d *delayedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	d.wait("SETATTR")
	return d.RawFileSystem.SetAttr(c, in, out)
}

func (d *delayedFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	d.wait("STATX")
	return d.RawFileSystem.Statx(c, in, out)
}

func (d *delayedFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	d.wait("MKNOD")
	return d.RawFileSystem.Mknod(c, in, name, out)
}

func (d *delayedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	d.wait("MKDIR")
	return d.RawFileSystem.Mkdir(c, in, name, out)
}

func (d *delayedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	d.wait("UNLINK")
	return d.RawFileSystem.Unlink(c, h, name)
}

func (d *delayedFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	d.wait("RMDIR")
	return d.RawFileSystem.Rmdir(c, h, name)
}

func (d *delayedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	d.wait("RENAME")
	return d.RawFileSystem.Rename(c, in, oldName, newName)
}

func (d *delayedFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	d.wait("LINK")
	return d.RawFileSystem.Link(c, in, name, out)
}

func (d *delayedFS) Symlink(c <-chan struct{}, h *fuse.InHeader, to, name string, out *fuse.EntryOut) fuse.Status {
	d.wait("SYMLINK")
	return d.RawFileSystem.Symlink(c, h, to, name, out)
}

func (d *delayedFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	d.wait("READLINK")
	return d.RawFileSystem.Readlink(c, h)
}

func (d *delayedFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	d.wait("ACCESS")
	return d.RawFileSystem.Access(c, in)
}

func (d *delayedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	d.wait("CREATE")
	return d.RawFileSystem.Create(c, in, name, out)
}

func (d *delayedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	d.wait("OPEN")
	return d.RawFileSystem.Open(c, in, out)
}

func (d *delayedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	d.wait("READ")
	return d.RawFileSystem.Read(c, in, buf)
}

func (d *delayedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	d.wait("WRITE")
	return d.RawFileSystem.Write(c, in, data)
}

func (d *delayedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	d.wait("FSYNC")
	return d.RawFileSystem.Fsync(c, in)
}

func (d *delayedFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	d.wait("OPENDIR")
	return d.RawFileSystem.OpenDir(c, in, out)
}

func (d *delayedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	d.wait("READDIR")
	return d.RawFileSystem.ReadDir(c, in, out)
}

func (d *delayedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	d.wait("READDIRPLUS")
	return d.RawFileSystem.ReadDirPlus(c, in, out)
}

func (d *delayedFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	d.wait("FSYNCDIR")
	return d.RawFileSystem.FsyncDir(c, in)
}

func writeStats(path string, counts map[string]int64) error {
	data, err := json.Marshal(counts) // keys sorted
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	delay := flag.Duration("delay", 2*time.Millisecond, "delay before answering each metadata request")
	concurrency := flag.Int("concurrency", 16, "requests served at once (go-fuse caps it at 16)")
	stats := flag.String("stats", "", "where SIGUSR1 writes the request counts (JSON)")
	debug := flag.Bool("debug", false, "log every FUSE request")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: latencyfs [flags] ORIGINAL MOUNTPOINT\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	// go-fuse serves at most GOMAXPROCS requests at once (clamped to 2..16);
	// the goroutines mostly sleep, so more than the CPUs is right here.
	runtime.GOMAXPROCS(*concurrency)

	root, err := fs.NewLoopbackRoot(flag.Arg(0))
	if err != nil {
		log.Fatalf("latencyfs: %v", err)
	}
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
	}
	opts.MountOptions = fuse.MountOptions{
		FsName:             "latencyfs",
		Name:               "latencyfs",
		AllowOther:         true,
		DirectMount:        true, // we are root: mount(2) directly, fusermount3 as fallback
		DisableReadDirPlus: true, // its attributes would expire at once (timeout 0)
		MaxBackground:      64,
		Debug:              *debug,
	}
	d := &delayedFS{RawFileSystem: fs.NewNodeFS(root, opts), delay: *delay, counts: map[string]int64{}}
	server, err := fuse.NewServer(d, flag.Arg(1), &opts.MountOptions)
	if err != nil {
		log.Fatalf("latencyfs: mount %s: %v", flag.Arg(1), err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		log.Fatalf("latencyfs: %v", err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				if *stats != "" {
					if err := writeStats(*stats, d.snapshot()); err != nil {
						log.Printf("latencyfs: stats: %v", err)
					}
				}
				continue
			}
			if err := server.Unmount(); err != nil {
				log.Printf("latencyfs: unmount: %v", err)
			}
			return
		}
	}()
	fmt.Printf("latencyfs: %s on %s, %s per request\n", flag.Arg(0), flag.Arg(1), *delay)
	server.Wait()
}
