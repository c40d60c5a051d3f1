//go:build unix

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// checkOwner refuses to let a buffer command write the buffer as another
// user than the one that owns it (the agent's): files it would create,
// as root say, could not be opened by the agent afterwards. The buffer
// directory decides, or data_dir when there is no buffer yet.
func checkOwner(bufferDir, dataDir string) error {
	for _, dir := range []string{bufferDir, dataDir} {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) == os.Geteuid() {
			return nil
		}
		owner := strconv.Itoa(int(st.Uid))
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		me := strconv.Itoa(os.Geteuid())
		if u, err := user.Current(); err == nil {
			me = u.Username
		}
		return fmt.Errorf("%s belongs to user %s, and this command runs as %s: files it writes there could not be used by the agent; run it as %s (sudo -u %s scanagent buffer ...)", dir, owner, me, owner, owner)
	}
	return nil
}
