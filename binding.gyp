{
  "variables": {
    # LZ4 1.9.2's lz4.c and lz4.h (BSD-2-Clause, native/vendor/lz4/LICENSE), as the lz4 npm package
    # 0.6.5 bundled them (its LZ4_decompress_safe decodes LZ4 records); vendored so that installing
    # pagewire never installs, or builds, that package's own addon.
    "lz4_lib": "native/vendor/lz4"
  },
  "targets": [
    {
      # lz4.c on its own, compiled as C (no -Werror anywhere: a new compiler's warning in it must not
      # break the install), its symbols hidden so they cannot clash with another copy loaded in the same
      # process (another package's LZ4 addon).
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
        "native/page_file_writer.cc",
        "native/page_lz4.cc",
        "native/xbzrle.cc",
        "native/xxhash64.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<(lz4_lib)"],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a call that throws while a worker thread's environment
      # is being torn down cannot throw into JavaScript any more; without it node-addon-api rethrows in
      # C++ and std::terminate aborts the whole process.
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "LZ4LIB_VISIBILITY="],
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
