package presented

import "errors"

// ErrTwoKeys refuses a request that presents two different keys, in two
// places or twice in one (or a parameter that may hide behind ';').
var ErrTwoKeys = errors.New("the request carries two different API keys")

// BodyError refuses a body that cannot be read in full as a JSON object:
// past the bound (413), not JSON by its Content-Type (415), or malformed
// (400). Its message holds nothing of the request, and no character a
// JSON string must escape.
type BodyError struct {
	Status int
	Msg    string
}

func (e *BodyError) Error() string { return e.Msg }
