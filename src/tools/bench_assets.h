/* bench_assets.h - the HTML report's script and style (web/, bundled at build time) */
#ifndef MERIDIAN_TOOLS_BENCH_ASSETS_H
#define MERIDIAN_TOOLS_BENCH_ASSETS_H

#include <stddef.h>

#include "ctl/dash.h"

/*
 * The report bundle (web/src/report.js with uPlot and its CSS, built by web/build.mjs into
 * <build>/web/report) embedded by cmake/embed.cmake as <build>/generated/bench_assets.c:
 * "report.js" and "report.css", which bench_report.c inlines into the page it writes. Static and
 * read-only, as dash.h describes; gz is always NULL here.
 */
extern const struct dash_asset bench_report_assets[];
extern const size_t bench_report_assets_count;

#endif
