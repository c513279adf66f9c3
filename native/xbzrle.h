// XBZRLE (docs/PROTOCOL.md section 4, as QEMU's docs/xbzrle.txt): a page's changes from its old
// contents as alternating runs of unchanged bytes (zrun: a ULEB128 length) and changed bytes (nzrun: a
// ULEB128 length, then the new bytes).
#pragma once
#include <cstddef>
#include <cstdint>

namespace pagewire {

// The canonical encoding of oldPage -> newPage (pageSize bytes each) into out: maximal runs, the first
// zrun may be 0, the trailing zrun dropped, minimal ULEB128 lengths; identical pages give 0 bytes.
// Returns its length, or -1 as soon as it would pass `limit` bytes (out must hold `limit` bytes).
int64_t XbzrleEncode(const uint8_t* oldPage, const uint8_t* newPage, size_t pageSize, uint8_t* out,
                     size_t limit);

// Applies payload[0, len) to page (pageSize bytes) in place. Returns false, leaving the page as it
// was, when the payload is malformed: a length of more than 4 bytes or cut short, a zrun of 0 after
// the first run, an nzrun of 0, a zrun without its nzrun, a run past pageSize, bytes past the payload.
bool XbzrleDecode(const uint8_t* payload, size_t len, uint8_t* page, size_t pageSize);

}  // namespace pagewire
