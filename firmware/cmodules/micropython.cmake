# All microfang user C modules, for CMake-based ports (USER_C_MODULES=this file).
include(${CMAKE_CURRENT_LIST_DIR}/wasm3/micropython.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/ed25519/micropython.cmake)
