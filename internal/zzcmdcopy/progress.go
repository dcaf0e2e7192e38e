package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress shows one line of progress on a stream: redrawn in place on a terminal, and
// printed as a new line at most every interval otherwise (logs and CI output stay
// readable).
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	width    int // the terminal's width, 0 when unknown
	interval time.Duration
	now      func() time.Time
	last     time.Time
	drawn    int // length of the line drawn in place, to blank it on redraw
	active   bool
}

// newProgress returns a progress line on w. interval bounds how often a new line is
// printed when w is not a terminal.
func newProgress(w io.Writer, interval time.Duration) *progress {
	p := &progress{w: w, interval: interval, now: time.Now}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if width, _, err := term.GetSize(int(f.Fd())); err == nil {
			p.width = width
		}
	}
	return p
}

// update shows line: at once on a terminal, else only when interval has passed since the
// last line printed (the first call prints nothing, so short runs stay quiet).
func (p *progress) update(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.tty {
		p.draw(line)
		return
	}
	if p.last.IsZero() {
		p.last = now
		return
	}
	if now.Sub(p.last) >= p.interval {
		p.last = now
		fmt.Fprintln(p.w, line)
	}
}

// finish shows the final line (always, on its own line) and ends the progress display.
// An empty line only ends the display: on a terminal the line drawn is erased.
func (p *progress) finish(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		if line == "" {
			if p.active {
				fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.drawn))
			}
		} else {
			p.draw(line)
			fmt.Fprintln(p.w)
		}
		p.active, p.drawn = false, 0
		return
	}
	if line != "" {
		fmt.Fprintln(p.w, line)
	}
}

// draw redraws the line in place. Callers hold mu.
func (p *progress) draw(line string) {
	if p.width > 1 && len(line) >= p.width {
		line = line[:p.width-1]
	}
	pad := ""
	if n := p.drawn - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.drawn, p.active = len(line), true
}

// bar renders a progress bar of width cells for done out of total.
func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(float64(width) * float64(min(done, total)) / float64(total))
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// formatETA renders a remaining time for people: "ETA 3m12s", "ETA --" when unknown.
func formatETA(d time.Duration, known bool) string {
	if !known || d < 0 {
		return "ETA --"
	}
	switch {
	case d < time.Second:
		return "ETA <1s"
	case d < time.Hour:
		return "ETA " + d.Round(time.Second).String()
	default:
		return "ETA " + d.Round(time.Minute).String()
	}
}
