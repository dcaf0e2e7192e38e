package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/livenessq/livenessq/storage"
)

// Open a storage by URL, store an object and stream it back. The same code runs on S3
// with a URL such as
// "s3://selfies?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true".
func Example() {
	dir, err := os.MkdirTemp("", "selfies")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	b, err := storage.OpenURL(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	content := "not really a JPEG"
	err = b.Put(ctx, "2024/alice.jpg", strings.NewReader(content),
		&storage.PutOptions{ContentType: "image/jpeg", Size: int64(len(content))})
	if err != nil {
		log.Fatal(err)
	}

	r, err := b.Get(ctx, "2024/alice.jpg", &storage.GetOptions{MaxBytes: 10 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Key, r.Size, r.ContentType)
	fmt.Println(string(data))

	_, err = b.Stat(ctx, "2024/bob.jpg")
	fmt.Println(errors.Is(err, storage.ErrNotFound))
	// Output:
	// 2024/alice.jpg 17 image/jpeg
	// not really a JPEG
	// true
}

// Open an S3 bucket from a config: explicit credentials here; leave AccessKey and
// SecretKey empty to use the SDK's default chain (environment, profile, roles).
func ExampleNewS3() {
	ctx := context.Background()
	b, err := storage.NewS3(ctx, storage.S3Config{
		Bucket:    "selfies",
		Prefix:    "2024",
		Endpoint:  "http://127.0.0.1:9000",
		Region:    "us-east-1",
		PathStyle: true,
		AccessKey: "access-key",
		SecretKey: "secret-key",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	fmt.Println(b.URL())
	fmt.Println(b.Sub("results").URL())
	// Output:
	// s3://selfies/2024?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true
	// s3://selfies/2024/results?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true
}

// List streams keys in lexical order, page by page.
func ExampleBucket_List() {
	dir, err := os.MkdirTemp("", "selfies")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, err := storage.NewLocal(storage.LocalConfig{Root: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	for _, k := range []string{"2024/b.jpg", "2024/a.jpg", "2023/z.jpg"} {
		if err := b.Put(ctx, k, strings.NewReader(k), nil); err != nil {
			log.Fatal(err)
		}
	}
	for a, err := range b.List(ctx, "2024/") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(a.Key, a.Size)
	}
	// Output:
	// 2024/a.jpg 10
	// 2024/b.jpg 10
}
