/* SPDX-License-Identifier: MIT */
/* tandem — run numeric batch work on every CPU thread, worker process and device of a machine.
 *
 * This umbrella header is the whole public API: what is not reachable from here is not API.
 * Every function returns 0 or a negative TDM_E* status (tandem/status.h) unless documented
 * otherwise; a runtime keeps the detailed message of the last error (tdm_errmsg()).
 */
#ifndef TANDEM_H
#define TANDEM_H

#include "tandem/export.h"
#include "tandem/version.h"
#include "tandem/status.h"
#include "tandem/runtime.h"
#include "tandem/tensor.h"
#include "tandem/kernel.h"
#include "tandem/progress.h"
#include "tandem/report.h"
#include "tandem/map.h"
#include "tandem/io.h"
#include "tandem/cache.h"
#include "tandem/sim.h"
#include "tandem/pipeline.h"
#include "tandem/image.h"
#include "tandem/dist.h"

#endif
