package store

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// jsonItem is an item in DynamoDB's own JSON form ({"pk": {"S": "..."}}), the
// form snapshots and cursors are written in, so that no type is lost.
type jsonItem map[string]jsonValue

type jsonValue struct {
	S    *string              `json:"S,omitempty"`
	N    *string              `json:"N,omitempty"`
	B    []byte               `json:"B,omitempty"`
	BOOL *bool                `json:"BOOL,omitempty"`
	NULL *bool                `json:"NULL,omitempty"`
	SS   []string             `json:"SS,omitempty"`
	NS   []string             `json:"NS,omitempty"`
	BS   [][]byte             `json:"BS,omitempty"`
	M    map[string]jsonValue `json:"M,omitempty"`
	L    []jsonValue          `json:"L,omitempty"`
}

func toJSONItem(item map[string]types.AttributeValue) jsonItem {
	out := make(jsonItem, len(item))
	for k, v := range item {
		out[k] = toJSONValue(v)
	}
	return out
}

func toJSONValue(v types.AttributeValue) jsonValue {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return jsonValue{S: &v.Value}
	case *types.AttributeValueMemberN:
		return jsonValue{N: &v.Value}
	case *types.AttributeValueMemberB:
		b := v.Value
		if b == nil {
			b = []byte{}
		}
		return jsonValue{B: b}
	case *types.AttributeValueMemberBOOL:
		return jsonValue{BOOL: &v.Value}
	case *types.AttributeValueMemberNULL:
		return jsonValue{NULL: &v.Value}
	case *types.AttributeValueMemberSS:
		return jsonValue{SS: v.Value}
	case *types.AttributeValueMemberNS:
		return jsonValue{NS: v.Value}
	case *types.AttributeValueMemberBS:
		return jsonValue{BS: v.Value}
	case *types.AttributeValueMemberM:
		m := make(map[string]jsonValue, len(v.Value))
		for k, e := range v.Value {
			m[k] = toJSONValue(e)
		}
		return jsonValue{M: m}
	case *types.AttributeValueMemberL:
		l := make([]jsonValue, len(v.Value))
		for i, e := range v.Value {
			l[i] = toJSONValue(e)
		}
		if l == nil {
			l = []jsonValue{}
		}
		return jsonValue{L: l}
	}
	return jsonValue{}
}

func fromJSONItem(item jsonItem) (map[string]types.AttributeValue, error) {
	out := make(map[string]types.AttributeValue, len(item))
	for k, v := range item {
		av, err := fromJSONValue(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", k, err)
		}
		out[k] = av
	}
	return out, nil
}

func fromJSONValue(v jsonValue) (types.AttributeValue, error) {
	switch {
	case v.S != nil:
		return &types.AttributeValueMemberS{Value: *v.S}, nil
	case v.N != nil:
		return &types.AttributeValueMemberN{Value: *v.N}, nil
	case v.B != nil:
		return &types.AttributeValueMemberB{Value: v.B}, nil
	case v.BOOL != nil:
		return &types.AttributeValueMemberBOOL{Value: *v.BOOL}, nil
	case v.NULL != nil:
		return &types.AttributeValueMemberNULL{Value: *v.NULL}, nil
	case v.SS != nil:
		return &types.AttributeValueMemberSS{Value: v.SS}, nil
	case v.NS != nil:
		return &types.AttributeValueMemberNS{Value: v.NS}, nil
	case v.BS != nil:
		return &types.AttributeValueMemberBS{Value: v.BS}, nil
	case v.M != nil:
		m := make(map[string]types.AttributeValue, len(v.M))
		for k, e := range v.M {
			av, err := fromJSONValue(e)
			if err != nil {
				return nil, err
			}
			m[k] = av
		}
		return &types.AttributeValueMemberM{Value: m}, nil
	case v.L != nil:
		l := make([]types.AttributeValue, len(v.L))
		for i, e := range v.L {
			av, err := fromJSONValue(e)
			if err != nil {
				return nil, err
			}
			l[i] = av
		}
		return &types.AttributeValueMemberL{Value: l}, nil
	}
	return nil, fmt.Errorf("value has no type")
}
