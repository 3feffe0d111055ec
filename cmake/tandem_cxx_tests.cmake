# SPDX-License-Identifier: MIT
# Public headers as C and C++, and a C++ consumer (included from the top-level CMakeLists.txt
# when tests are built).
#
# hdrcheck_c, hdrcheck_cxx11/17/20: one translation unit per public header that includes only
# that header (twice: include guards), compiled with -pedantic (-Werror with TDM_WERROR), so a
# header that does not compile on its own, or not as C++, breaks the build.
# test_cxx: tests/test_cxx.cc, a C++17 program linked to libtandem.so; one CTest per cmocka test,
# named cxx_<behaviour>.
file(GLOB tdm_public_headers RELATIVE ${PROJECT_SOURCE_DIR}/include
     ${PROJECT_SOURCE_DIR}/include/tandem.h ${PROJECT_SOURCE_DIR}/include/tandem/*.h)
list(APPEND tdm_public_headers tandem/version.h)
set(tdm_hdr_dir ${CMAKE_CURRENT_BINARY_DIR}/hdrcheck)
set(tdm_hdr_c "")
set(tdm_hdr_cxx "")
foreach(h ${tdm_public_headers})
  string(MAKE_C_IDENTIFIER "${h}" id)
  set(body "#include <${h}>\n#include <${h}>\nint tdm_hdrcheck_${id}(void);\nint tdm_hdrcheck_${id}(void) { return 0; }\n")
  file(CONFIGURE OUTPUT ${tdm_hdr_dir}/${id}.c CONTENT "${body}")
  file(CONFIGURE OUTPUT ${tdm_hdr_dir}/${id}.cc CONTENT "${body}")
  list(APPEND tdm_hdr_c ${tdm_hdr_dir}/${id}.c)
  list(APPEND tdm_hdr_cxx ${tdm_hdr_dir}/${id}.cc)
endforeach()
set(tdm_hdr_flags -Wall -Wextra -pedantic)
if(TDM_WERROR)
  list(APPEND tdm_hdr_flags -Werror)
endif()

add_library(hdrcheck_c OBJECT ${tdm_hdr_c})
target_include_directories(hdrcheck_c PRIVATE ${PROJECT_SOURCE_DIR}/include
                           ${PROJECT_BINARY_DIR}/include)
target_compile_options(hdrcheck_c PRIVATE ${tdm_hdr_flags})

if(CMAKE_CXX_COMPILER)
  foreach(std 11 17 20)
    add_library(hdrcheck_cxx${std} OBJECT ${tdm_hdr_cxx})
    set_target_properties(hdrcheck_cxx${std} PROPERTIES CXX_STANDARD ${std}
                          CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
    target_include_directories(hdrcheck_cxx${std} PRIVATE ${PROJECT_SOURCE_DIR}/include
                               ${PROJECT_BINARY_DIR}/include)
    target_compile_options(hdrcheck_cxx${std} PRIVATE ${tdm_hdr_flags})
  endforeach()

  add_executable(test_cxx ${PROJECT_SOURCE_DIR}/tests/test_cxx.cc)
  set_target_properties(test_cxx PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                        CXX_EXTENSIONS OFF)
  target_compile_options(test_cxx PRIVATE ${tdm_hdr_flags})
  target_link_libraries(test_cxx PRIVATE tandem_shared tdm_cmocka)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/test_cxx.cc)
  file(STRINGS ${PROJECT_SOURCE_DIR}/tests/test_cxx.cc lines
       REGEX "cmocka_unit_test[_a-z]*\\(test_[A-Za-z0-9_]+")
  foreach(line ${lines})
    string(REGEX MATCH "cmocka_unit_test[_a-z]*\\(test_([A-Za-z0-9_]+)" m "${line}")
    add_test(NAME cxx_${CMAKE_MATCH_1} COMMAND test_cxx test_${CMAKE_MATCH_1})
    set_tests_properties(cxx_${CMAKE_MATCH_1} PROPERTIES TIMEOUT 120 LABELS cxx ENVIRONMENT
      "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan.supp;POCL_CACHE_DIR=${PROJECT_BINARY_DIR}/tests/pocl-cache;XDG_CACHE_HOME=${PROJECT_BINARY_DIR}/tests/xdg-cache")
  endforeach()
else()
  message(STATUS "tandem: no C++ compiler: the C++ header checks and test_cxx are not built")
endif()

# libtandem.so loads the OpenCL ICD loader and libjpeg with dlopen: it must not NEED them (the
# consumer matrix, scripts/check-install.sh, checks libmpi too once the MPI layer is its own
# library).
add_test(NAME package_no_optional_needed
         COMMAND ${CMAKE_COMMAND} -DLIB=$<TARGET_FILE:tandem_shared> "-DFORBIDDEN=libOpenCL;libjpeg"
                 -P ${PROJECT_SOURCE_DIR}/cmake/check_needed.cmake)
set_tests_properties(package_no_optional_needed PROPERTIES TIMEOUT 30 LABELS package)
