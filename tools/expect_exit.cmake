# SPDX-License-Identifier: MIT
# cmake -DCMD=<program> -DARGS=<arg|arg|...> -DEXPECT=<code> -P expect_exit.cmake
# Runs the program and fails unless it exits with EXPECT and writes a usage line on stderr.
string(REPLACE "|" ";" ARG "${ARGS}")
execute_process(COMMAND ${CMD} ${ARG} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL EXPECT)
  message(FATAL_ERROR "${CMD} ${ARG}: exit ${rc}, expected ${EXPECT}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(NOT err MATCHES "usage: tandem")
  message(FATAL_ERROR "${CMD} ${ARG}: no usage on stderr\nstderr:\n${err}")
endif()
message(STATUS "exit ${rc} as expected; stderr:\n${err}")
