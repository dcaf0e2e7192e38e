package worker

import (
	"fmt"
	"strings"

	"github.com/rs/zerolog"
)

// asynqLogger sends asynq's own log lines to zerolog.
type asynqLogger struct{ log zerolog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug().Msg(strings.TrimSpace(fmt.Sprint(args...))) }
func (l asynqLogger) Info(args ...any)  { l.log.Info().Msg(strings.TrimSpace(fmt.Sprint(args...))) }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn().Msg(strings.TrimSpace(fmt.Sprint(args...))) }
func (l asynqLogger) Error(args ...any) { l.log.Error().Msg(strings.TrimSpace(fmt.Sprint(args...))) }
func (l asynqLogger) Fatal(args ...any) { l.log.Fatal().Msg(strings.TrimSpace(fmt.Sprint(args...))) }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
