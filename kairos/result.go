package kairos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// TimeLayout is the layout of the API's processed_at and requested_at fields
// ("YYYY-MM-DD HH:MM:SS", no zone, read as UTC).
const TimeLayout = "2006-01-02 15:04:05"

// Face is one detected face, in the API's pixel coordinates.
type Face struct {
	// Confidence is the detector's confidence that this is a face.
	Confidence float64
	// X and Y are the box's top-left corner (the API's top_left).
	X, Y float64
	// Width and Height are the box's size (the API's delta).
	Width, Height float64
}

// Result is the API's answer to one successful (200) verification.
type Result struct {
	// RequestID is the answer's X-Request-ID header (may be empty).
	RequestID string
	// APIReqUID is the body's api_req_uid.
	APIReqUID string
	// ResponseCode is the body's response_code, verbatim (its meaning is undocumented;
	// never branch on it).
	ResponseCode int
	// RequestedAt and ProcessedAt are the body's timestamps in UTC; zero when absent or in
	// an unknown format.
	RequestedAt, ProcessedAt time.Time
	// Score is faces_liveness, in [0, 1]; 0 when there is no face and no score.
	Score float64
	// Threshold is the threshold the request was sent with.
	Threshold float64
	// Live is true when at least one face was found and Score >= Threshold.
	Live bool
	// Faces are the detected faces; empty (not an error) when the API found none: the
	// caller's no_face outcome.
	Faces []Face
	// ImageWidth and ImageHeight are the image size the API reports it saw (img).
	ImageWidth, ImageHeight int
	// StatusCode is the HTTP status (200).
	StatusCode int
	// Latency is the time from sending the request to reading the whole answer.
	Latency time.Duration
}

// maxImageSide bounds img.width/height in a plausible answer.
const maxImageSide = 1 << 20

type wirePoint struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

type wireFace struct {
	Confidence float64   `json:"confidence"`
	Delta      wirePoint `json:"delta"`
	TopLeft    wirePoint `json:"top_left"`
}

type wireResponse struct {
	APIReqUID    string  `json:"api_req_uid"`
	ProcessedAt  string  `json:"processed_at"`
	RequestedAt  string  `json:"requested_at"`
	ResponseCode flexInt `json:"response_code"`
	ResponseData *struct {
		FacesLiveness  *float64   `json:"faces_liveness"`
		FacesPredicted []wireFace `json:"faces_predicted"`
		Img            struct {
			Height float64 `json:"height"`
			Width  float64 `json:"width"`
		} `json:"img"`
	} `json:"response_data"`
}

// flexInt decodes a JSON integer, or a string holding one, and ignores anything else
// (response_code is stored verbatim and never branched on, so it must not fail a paid
// call).
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if v, err := strconv.ParseFloat(string(b), 64); err == nil && v == math.Trunc(v) && math.Abs(v) < 1<<31 {
		*f = flexInt(v)
	}
	return nil
}

// parseResponse decodes a 200 body into a Result (the fields from headers and timing are
// the caller's). Every error wraps ErrBadResponse. Unknown fields are ignored.
func parseResponse(body []byte, threshold float64) (*Result, error) {
	var w wireResponse
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, badResponse(jsonErrorText(err))
	}
	d := w.ResponseData
	if d == nil {
		return nil, badResponse("no response_data")
	}
	res := &Result{
		APIReqUID:    w.APIReqUID,
		ResponseCode: int(w.ResponseCode),
		RequestedAt:  parseTime(w.RequestedAt),
		ProcessedAt:  parseTime(w.ProcessedAt),
		Threshold:    threshold,
	}
	if d.FacesLiveness != nil {
		res.Score = *d.FacesLiveness
	} else if len(d.FacesPredicted) > 0 {
		return nil, badResponse("faces without faces_liveness")
	}
	if !(res.Score >= 0 && res.Score <= 1) {
		return nil, badResponse(fmt.Sprintf("faces_liveness %v outside [0, 1]", res.Score))
	}
	if len(d.FacesPredicted) > 0 {
		res.Faces = make([]Face, len(d.FacesPredicted))
		for i, f := range d.FacesPredicted {
			res.Faces[i] = Face{
				Confidence: f.Confidence,
				X:          f.TopLeft.X,
				Y:          f.TopLeft.Y,
				Width:      f.Delta.X,
				Height:     f.Delta.Y,
			}
		}
	}
	for _, side := range [2]float64{d.Img.Width, d.Img.Height} {
		if !(side >= 0 && side <= maxImageSide) {
			return nil, badResponse(fmt.Sprintf("img size %v out of range", side))
		}
	}
	res.ImageWidth, res.ImageHeight = int(d.Img.Width), int(d.Img.Height)
	res.Live = len(res.Faces) > 0 && res.Score >= threshold
	return res, nil
}

// badResponse is the error for a 200 whose body is not the documented JSON.
func badResponse(detail string) error {
	return &APIError{StatusCode: 200, Message: detail, kind: ErrBadResponse}
}

// jsonErrorText describes a decoding error without quoting the body.
func jsonErrorText(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return "not JSON: syntax error at offset " + strconv.FormatInt(e.Offset, 10)
	case *json.UnmarshalTypeError:
		return "field " + strconv.Quote(e.Field) + " is a JSON " + e.Value
	}
	return "not the documented JSON"
}

// parseTime reads the documented layout as UTC, falling back to RFC 3339; zero otherwise.
func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	if t, err := time.Parse(TimeLayout, s); err == nil {
		return t
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC()
	}
	return time.Time{}
}
