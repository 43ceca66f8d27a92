package query

import (
	"encoding/binary"
	"errors"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// A filter on a dictionary-encoded string column is answered from the
// encoded pages: the wanted string is looked up once in the chunk's
// dictionary, and the data pages' run-length encoded indices are compared
// with its index, run by run. The lake sorts rows by device and metric, so
// a row group's device column is a few hundred runs, and filtering it costs
// a few hundred comparisons instead of decoding 131072 strings.
//
// Pages this does not understand (another encoding, nulls, repetition)
// make it give up with errNotDictEncoded before anything is returned; the
// column is then read value by value.

var errNotDictEncoded = errors.New("column chunk is not dictionary encoded throughout")

// errCorruptPage reports encoded data that does not parse.
var errCorruptPage = errors.New("corrupt dictionary-encoded page")

// matchDictPages returns the rows of the column chunk read by pr, which
// holds rows rows, whose value is v.
func matchDictPages(pr file.PageReader, rows int64, v string) ([]rowRange, error) {
	var (
		out  []rowRange
		want = int64(-2) // -2: no dictionary yet; -1: v is not in it
		row  int64
	)
	for pr.Next() {
		pg := pr.Page()
		switch p := pg.(type) {
		case *file.DictionaryPage:
			enc := parquet.Encoding(p.Encoding())
			if enc != parquet.Encodings.Plain && enc != parquet.Encodings.PlainDict {
				return nil, errNotDictEncoded
			}
			k, err := plainIndexOf(p.Data(), int(p.NumValues()), v)
			if err != nil {
				return nil, err
			}
			want = k
		case *file.DataPageV1:
			if want == -2 || !isDictIndices(parquet.Encoding(p.Encoding())) {
				return nil, errNotDictEncoded
			}
			var err error
			if out, err = matchIndices(out, p.Data(), int(p.NumValues()), row, want); err != nil {
				return nil, err
			}
			row += int64(p.NumValues())
		case *file.DataPageV2:
			if want == -2 || !isDictIndices(parquet.Encoding(p.Encoding())) || p.NumNulls() != 0 {
				return nil, errNotDictEncoded
			}
			data := p.Data()
			lv := int(p.DefinitionLevelByteLen()) + int(p.RepetitionLevelByteLen())
			if lv < 0 || lv > len(data) {
				return nil, errCorruptPage
			}
			var err error
			if out, err = matchIndices(out, data[lv:], int(p.NumValues()), row, want); err != nil {
				return nil, err
			}
			row += int64(p.NumValues())
		default:
			return nil, errNotDictEncoded
		}
	}
	if err := pr.Err(); err != nil {
		return nil, err
	}
	if row != rows {
		return nil, errCorruptPage
	}
	return out, nil
}

func isDictIndices(enc parquet.Encoding) bool {
	return enc == parquet.Encodings.RLEDict || enc == parquet.Encodings.PlainDict
}

// plainIndexOf returns the index of v among the n PLAIN-encoded byte
// arrays of data, or -1.
func plainIndexOf(data []byte, n int, v string) (int64, error) {
	for k := 0; k < n; k++ {
		if len(data) < 4 {
			return 0, errCorruptPage
		}
		l := binary.LittleEndian.Uint32(data)
		if uint64(l) > uint64(len(data)-4) {
			return 0, errCorruptPage
		}
		if string(data[4:4+l]) == v {
			return int64(k), nil
		}
		data = data[4+l:]
	}
	return -1, nil
}

// matchIndices appends to out the rows, counted from first, of the n
// dictionary indices in data (a bit width byte, then the RLE/bit-packed
// hybrid encoding) that equal want.
func matchIndices(out []rowRange, data []byte, n int, first, want int64) ([]rowRange, error) {
	if n == 0 {
		return out, nil
	}
	if len(data) < 1 || data[0] > 32 {
		return nil, errCorruptPage
	}
	width := int(data[0])
	data = data[1:]
	add := func(lo, hi int64) {
		if k := len(out); k > 0 && out[k-1].hi == lo {
			out[k-1].hi = hi
		} else {
			out = append(out, rowRange{lo, hi})
		}
	}
	row, end := first, first+int64(n)
	for row < end {
		h, k := binary.Uvarint(data)
		if k <= 0 {
			return nil, errCorruptPage
		}
		data = data[k:]
		if h&1 == 0 {
			// A run of one value.
			count := int64(h >> 1)
			nb := (width + 7) / 8
			if count == 0 || len(data) < nb {
				return nil, errCorruptPage
			}
			var val int64
			for b := nb - 1; b >= 0; b-- {
				val = val<<8 | int64(data[b])
			}
			data = data[nb:]
			hi := min(row+count, end)
			if val == want {
				add(row, hi)
			}
			row = hi
			continue
		}
		// Groups of eight bit-packed values, least significant bit first.
		groups := h >> 1
		if groups == 0 || groups > uint64(len(data)) {
			return nil, errCorruptPage
		}
		nbytes := groups * uint64(width)
		if nbytes > uint64(len(data)) {
			return nil, errCorruptPage
		}
		packed := data[:nbytes]
		data = data[nbytes:]
		count := int64(groups * 8)
		mask := uint64(1)<<width - 1
		for i := int64(0); i < count && row < end; i++ {
			var val uint64
			if width > 0 {
				bit := uint64(i) * uint64(width)
				var w uint64
				for b := uint64(0); b < 8 && bit/8+b < uint64(len(packed)); b++ {
					w |= uint64(packed[bit/8+b]) << (8 * b)
				}
				val = (w >> (bit % 8)) & mask
			}
			if int64(val) == want {
				add(row, row+1)
			}
			row++
		}
	}
	return out, nil
}
