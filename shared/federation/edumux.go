package federation

import (
	"context"
	"encoding/json"
	"sync"
)

// EDUHandler takes one inbound EDU's content from origin, the server whose
// signature the transaction carried.
type EDUHandler func(ctx context.Context, origin string, content json.RawMessage) error

// EDUMux routes inbound EDUs by edu_type to the package that owns them
// (typing and receipts to ephemeral, presence, device lists, to-device),
// so that /send knows none of them. Types without a handler are dropped,
// as the spec asks of unknown EDUs.
type EDUMux struct {
	mu       sync.RWMutex
	handlers map[string]EDUHandler
}

// Handle routes EDUs of eduType to h.
func (m *EDUMux) Handle(eduType string, h EDUHandler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.handlers == nil {
		m.handlers = map[string]EDUHandler{}
	}
	m.handlers[eduType] = h
}

// Serve hands edu to its type's handler; Inbox.EDU takes it.
func (m *EDUMux) Serve(ctx context.Context, origin string, edu EDU) error {
	m.mu.RLock()
	h := m.handlers[edu.Type]
	m.mu.RUnlock()
	if h == nil {
		return nil
	}
	return h(ctx, origin, edu.Content)
}
