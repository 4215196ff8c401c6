# Ed25519 verification as a MicroPython user C module (CMake-based ports: esp32). See README.md.
add_library(usermod_ed25519 INTERFACE)

set(ED25519_VENDORED
    ${CMAKE_CURRENT_LIST_DIR}/monocypher/monocypher.c
    ${CMAKE_CURRENT_LIST_DIR}/sha512/sha512-blocks.c
    ${CMAKE_CURRENT_LIST_DIR}/sha512/sha512-hash.c
)

target_sources(usermod_ed25519 INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/mp/moded25519.c
    ${CMAKE_CURRENT_LIST_DIR}/mf_ed25519.c
    ${ED25519_VENDORED}
)

# The vendored C is not written for the port's warning set.
set_source_files_properties(${ED25519_VENDORED} PROPERTIES COMPILE_OPTIONS
    "-Wno-error;-Wno-sign-compare;-Wno-unused-parameter;-Wno-unused-function;-O2")

target_link_libraries(usermod INTERFACE usermod_ed25519)
