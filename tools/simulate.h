/* SPDX-License-Identifier: MIT */
/* tandem CLI: the `simulate` command (tools/simulate.c). */
#ifndef TANDEM_TOOLS_SIMULATE_H
#define TANDEM_TOOLS_SIMULATE_H

/* argv[1] is "simulate". Returns the process exit code (0, 1 failure, 2 usage). */
int tandem_cmd_simulate(int argc, char **argv);

#endif
