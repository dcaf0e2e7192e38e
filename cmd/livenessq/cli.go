package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// command is one subcommand of livenessq.
type command struct {
	name    string
	summary string
	// run executes the command with its arguments (after the command name).
	run func(ctx context.Context, env *environ, args []string) error
}

// environ is what a command sees of the process: the environment and the standard streams.
type environ struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError is a bad flag, argument or environment value: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// commands lists every subcommand; each lives in a file of its own.
var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// run is the whole program: it returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := &environ{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return exitCode(c.run(ctx, env, []string{"--help"}), stderr)
			}
		}
		printHelp(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "livenessq: unknown command %q\n\n", args[0])
		printHelp(stderr)
		return 2
	}
	return exitCode(c.run(ctx, env, args[1:]), stderr)
}

func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "livenessq: %v\n", err)
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "livenessq: interrupted")
		return 130
	default:
		fmt.Fprintf(stderr, "livenessq: %v\n", err)
		return 1
	}
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, `livenessq verifies the liveness of selfies in S3-compatible storage through the
Kairos liveness-verification API, on an asynq/Redis queue.

Usage: livenessq <command> [flags]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Run 'livenessq <command> --help' for a command's flags. Every flag also reads the
environment variable named in its help.
`)
}

// flagSet is a flag.FlagSet whose flags also read environment variables: a flag given on
// the command line wins, then its variable, then its default.
type flagSet struct {
	*flag.FlagSet
	env    *environ
	envOf  map[string]string // flag name → variable
	usage  string
	parsed bool
}

func newFlagSet(env *environ, name, usage string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: env, envOf: map[string]string{}, usage: usage}
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		out := env.stdout
		fmt.Fprintf(out, "Usage: livenessq %s %s\n\nFlags:\n", name, usage)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			ev := ""
			if v := fs.envOf[f.Name]; v != "" {
				ev = " [$" + v + "]"
			}
			fmt.Fprintf(out, "  --%s\n        %s%s%s\n", f.Name, f.Usage, def, ev)
		})
	}
	return fs
}

// bindEnv ties flag name to an environment variable.
func (fs *flagSet) bindEnv(name, variable string) { fs.envOf[name] = variable }

// parse parses args, then fills unset flags from their variables. A bad value names the
// flag (or variable) and what is allowed.
func (fs *flagSet) parse(args []string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, variable := range fs.envOf {
		if set[name] {
			continue
		}
		v := strings.TrimSpace(fs.env.getenv(variable))
		if v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return usagef("%s: invalid value for $%s (--%s): %v", fs.Name(), variable, name, err)
		}
	}
	fs.parsed = true
	return nil
}

// parseNoArgs parses args as parse does and refuses any argument that is not a flag,
// naming the first: "NAME: unexpected argument "ARG"" followed by hint.
func (fs *flagSet) parseNoArgs(args []string, hint string) error {
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q%s", fs.Name(), fs.Arg(0), hint)
	}
	return nil
}
