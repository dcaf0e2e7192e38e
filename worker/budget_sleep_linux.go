package worker

import (
	"syscall"
	"time"
)

// sleepPrecisely sleeps d in the calling thread with nanosleep: the kernel's
// high-resolution timers wake it within microseconds, where a Go timer can wake a
// millisecond late (an idle runtime waits for timers in epoll, whose timeout is in
// milliseconds). It holds a thread for d, so it is kept for the last stretch of a wait.
func sleepPrecisely(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	for ts.Sec > 0 || ts.Nsec > 0 {
		var left syscall.Timespec
		if err := syscall.Nanosleep(&ts, &left); err != syscall.EINTR {
			return
		}
		ts = left
	}
}
