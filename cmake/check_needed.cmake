# SPDX-License-Identifier: MIT
# cmake -DLIB=<libtandem.so> -DFORBIDDEN="libOpenCL;libjpeg" -P check_needed.cmake
# Fails when the library's dynamic section NEEDs one of FORBIDDEN (readelf -d).
find_program(READELF readelf REQUIRED)
execute_process(COMMAND ${READELF} -d ${LIB} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf -d ${LIB} failed")
endif()
string(REGEX MATCHALL "\\(NEEDED\\)[^\n]*\\[[^]\n]*\\]" needed "${out}")
message(STATUS "${LIB}: ${needed}")
foreach(f ${FORBIDDEN})
  if(needed MATCHES "\\[${f}\\.")
    message(FATAL_ERROR "${LIB} NEEDs ${f}: it must be loaded with dlopen where it is used")
  endif()
endforeach()
