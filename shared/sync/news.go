package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// NewsKind is the queue job kind that carries news to the sync tier: the
// keys of the syncs to wake.
const NewsKind = "sync-news"

// newsChunk bounds the keys of one message, far under SQS's 256 KB for
// user IDs of up to 255 bytes, so that a room with thousands of local
// members takes a few messages, not a refused one.
const newsChunk = 500

type newsMessage struct {
	Keys []string `json:"keys"`
}

// NewsBodies encodes keys, each once, as the bodies of NewsKind messages.
func NewsBodies(keys []string) ([][]byte, error) {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	var out [][]byte
	for chunk := range slices.Chunk(keys, newsChunk) {
		b, err := json.Marshal(newsMessage{Keys: chunk})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// HandleNews wakes the syncs a NewsKind message names: the tier's queue
// handler.
func (s *Service) HandleNews(_ context.Context, body []byte) error {
	var m newsMessage
	if err := json.Unmarshal(body, &m); err != nil {
		// Redelivery cannot mend a message that does not parse.
		return fmt.Errorf("sync news: %w", err)
	}
	s.Wake(m.Keys)
	return nil
}
