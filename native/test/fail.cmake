# Run by ctest in place of the C++ tests when they cannot be built: fails with MESSAGE.
message(FATAL_ERROR "${MESSAGE}")
