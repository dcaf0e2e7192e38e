package kairos_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/livenessq/livenessq/kairos"
	"github.com/livenessq/livenessq/kairos/kairostest"
)

// Verify one selfie. The emulator stands in for the API; in production BaseURL is left
// empty (DefaultBaseURL) and the credentials come from KAIROS_APP_ID / KAIROS_APP_KEY.
func ExampleClient_Verify() {
	score := 0.87
	emu := kairostest.New(kairostest.Config{
		AppID: "my-app", AppKey: "my-key",
		Rules: []kairostest.Rule{{Pattern: "alice*.jpg", Score: &score}},
	})
	srv := httptest.NewServer(emu)
	defer srv.Close()

	client, err := kairos.New(kairos.Config{BaseURL: srv.URL + "/v0.2/liveness-verification", AppID: "my-app", AppKey: "my-key"})
	if err != nil {
		fmt.Println(err)
		return
	}
	img := kairostest.JPEG(1024, 768, 1) // any JPEG or PNG, e.g. an object from storage
	res, err := client.Verify(context.Background(), kairos.Selfie{
		Name:        "selfies/2024/alice.jpg",
		ContentType: "image/jpeg",
		Size:        int64(len(img)),
		Body:        bytes.NewReader(img),
	}, 0.6)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("live=%v score=%.2f faces=%d image=%dx%d\n", res.Live, res.Score, len(res.Faces), res.ImageWidth, res.ImageHeight)
	// Output: live=true score=0.87 faces=1 image=1024x768
}

// Classify a failed call: service-wide states first, then the retry decision.
func ExampleIsRetryable() {
	emu := kairostest.New(kairostest.Config{AppID: "my-app", AppKey: "my-key", RetryAfter: 30 * time.Second})
	_ = emu.SetFaults(kairostest.Faults{OutageFor: time.Minute}) // the API answers 503 for a minute
	srv := httptest.NewServer(emu)
	defer srv.Close()
	client, _ := kairos.New(kairos.Config{BaseURL: srv.URL, AppID: "my-app", AppKey: "my-key"})

	img := kairostest.JPEG(640, 480, 1)
	_, err := client.Verify(context.Background(), kairos.Selfie{Name: "bob.jpg", ContentType: "image/jpeg", Size: int64(len(img)), Body: bytes.NewReader(img)}, 0.6)
	switch {
	case errors.Is(err, kairos.ErrUsageLimit), errors.Is(err, kairos.ErrUnauthorized):
		fmt.Println("stop calling the API: cool down or pause")
	case kairos.IsRetryable(err):
		fmt.Println("retry this selfie later, not before", kairos.RetryAfter(err))
	case err != nil:
		fmt.Println("final:", err)
	}
	// Output: retry this selfie later, not before 30s
}
