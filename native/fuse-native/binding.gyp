# Replaces fuse-native's own binding.gyp: compile against Debian's libfuse-dev (libfuse 2.9,
# found with pkg-config) instead of the headers and library fuse-shared-library bundles.
{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")"
    ],
    "cflags": ["-g", "-O2", "-Wall", "<!@(pkg-config --cflags fuse)"],
    "libraries": ["<!@(pkg-config --libs fuse)"],
    "sources": ["fuse-native.c"]
  }]
}
