// Package wire is what the gateway says over HTTP, as the key owners' API
// and the operators' admin API share it: the success and error envelopes,
// keys and balances as listings show them, times as epoch seconds, and
// the refusals of the key policy with their status. Each shape is defined
// once, here.
package wire
