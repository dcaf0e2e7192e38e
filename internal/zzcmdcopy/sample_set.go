package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/livenessq/livenessq/kairos/kairostest"
	"github.com/livenessq/livenessq/results"
)

// defaultSampleDir is the sample set `livenessq run` verifies when no --storage is given:
// the repository ships it, so that the first command shows every outcome on a fresh
// clone. When it is missing (the binary runs outside the repository), run writes the
// same set to a temporary directory.
const defaultSampleDir = "testdata/sample"

// sampleFile is one selfie of the sample set and the status it ends in with the
// built-in emulator's rules (sampleRules).
type sampleFile struct {
	name string
	data []byte
	want results.Status
}

// sampleSet returns the sample set, generated deterministically: scored selfies, selfies
// without a face, one the API rejects, and images the pre-check refuses.
func sampleSet() []sampleFile {
	jpeg, png := kairostest.JPEG, kairostest.PNG
	whole := jpeg(480, 640, 40)
	return []sampleFile{
		{"live-01.jpg", jpeg(1080, 1350, 1), results.StatusLive},
		{"live-02.jpg", jpeg(720, 960, 2), results.StatusLive},
		{"live-03.jpg", jpeg(480, 640, 3), results.StatusLive},
		{"spoof-01.jpg", jpeg(720, 960, 11), results.StatusNotLive},
		{"spoof-02.jpg", jpeg(480, 640, 12), results.StatusNotLive},
		{"spoof-03.png", png(600, 800, 13), results.StatusNotLive},
		// No rule: the emulator derives their scores from the image bytes.
		{"selfie-01.jpg", jpeg(640, 800, 21), ""},
		{"selfie-02.jpg", jpeg(640, 800, 22), ""},
		{"selfie-03.jpg", jpeg(640, 800, 23), ""},
		{"selfie-04.jpg", jpeg(640, 800, 24), ""},
		{"noface-01.jpg", jpeg(640, 480, 31), results.StatusNoFace},
		{"noface-02.png", png(400, 400, 32), results.StatusNoFace},
		{"rejected-01.jpg", jpeg(600, 600, 33), results.StatusRejected},
		{"invalid-tiny-200x150.jpg", jpeg(200, 150, 41), results.StatusInvalidImage},
		{"invalid-wide-5200x320.png", png(5200, 320, 42), results.StatusInvalidImage},
		{"invalid-truncated.jpg", whole[:len(whole)*6/10], results.StatusInvalidImage},
		{"invalid-not-a-photo.jpg", []byte("This is a text file named .jpg, not a photo.\n"), results.StatusInvalidImage},
	}
}

// sampleRules are the built-in emulator's rules for the sample set's names: fixed scores
// for live-* and spoof-*, no face for noface-*, 422 (rejected) for rejected-*. Other
// names get the emulator's hash-derived score.
func sampleRules() []kairostest.Rule {
	score := func(pattern string, s float64) kairostest.Rule {
		return kairostest.Rule{Pattern: pattern, Score: &s}
	}
	return []kairostest.Rule{
		score("live-01.*", 0.9731),
		score("live-02.*", 0.9102),
		score("live-03.*", 0.8417),
		score("live-*", 0.9),
		score("spoof-01.*", 0.0815),
		score("spoof-02.*", 0.2266),
		score("spoof-03.*", 0.4120),
		score("spoof-*", 0.2),
		{Pattern: "noface-*", NoFace: true},
		{Pattern: "rejected-*", Status: 422},
	}
}

// writeSampleSet writes the sample set into dir, creating it.
func writeSampleSet(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write sample set: %w", err)
	}
	for _, f := range sampleSet() {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("write sample set: %w", err)
		}
	}
	return nil
}
