{
  "variables": {
    # The C library bundled by the lz4 npm package (its LZ4_decompress_safe decodes LZ4 records).
    # Resolved through node, so a hoisted node_modules/lz4 is found too; relative to this directory
    # (gyp's make generator cannot place objects for absolute source paths).
    "lz4_lib": "<!(node -p \"const p = require('path'); p.relative(process.cwd(), p.join(p.dirname(require.resolve('lz4/package.json')), 'deps', 'lz4', 'lib'))\")"
  },
  "targets": [
    {
      # lz4.c on its own, compiled as C (no -Werror anywhere: a new compiler's warning in it must not
      # break the install), its symbols hidden so they cannot clash with another copy (the lz4
      # package's own addon).
      "target_name": "pagewire_lz4",
      "type": "static_library",
      "sources": ["<(lz4_lib)/lz4.c"],
      "include_dirs": ["<(lz4_lib)"],
      "defines": ["LZ4LIB_VISIBILITY="],
      "cflags": ["-O3", "-fvisibility=hidden"],
      "xcode_settings": {
        "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
        "OTHER_CFLAGS": ["-O3"]
      }
    },
    {
      "target_name": "pagewire",
      "dependencies": ["pagewire_lz4"],
      "sources": [
        "native/addon.cc",
        "native/bitmap.cc",
        "native/codec.cc",
        "native/extents.cc",
        "native/frame_reader.cc",
        "native/mmap.cc",
        "native/page_lz4.cc",
        "native/xbzrle.cc",
        "native/xxhash64.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<(lz4_lib)"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "LZ4LIB_VISIBILITY="],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O3", "-Wall", "-Wextra"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      }
    }
  ]
}
