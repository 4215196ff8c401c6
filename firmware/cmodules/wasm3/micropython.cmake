# wasm3 as a MicroPython user C module (CMake-based ports: esp32). See README.md.
add_library(usermod_wasm3 INTERFACE)

file(GLOB WASM3_SOURCES ${CMAKE_CURRENT_LIST_DIR}/wasm3/*.c)

target_sources(usermod_wasm3 INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/mp/modwasm3.c
    ${WASM3_SOURCES}
)

target_include_directories(usermod_wasm3 INTERFACE ${CMAKE_CURRENT_LIST_DIR}/wasm3)

target_compile_definitions(usermod_wasm3 INTERFACE
    d_m3ExternalAllocator=1
    d_m3RecordBacktraces=0
    d_m3VerboseErrorMessages=1
    MICROPY_TRACKED_ALLOC=1
)

# wasm3 is not written for the port's warning set.
set_source_files_properties(${WASM3_SOURCES} PROPERTIES COMPILE_OPTIONS
    "-Wno-error;-fno-strict-aliasing;-Wno-unused-parameter;-Wno-sign-compare;-O2")

target_link_libraries(usermod INTERFACE usermod_wasm3)
