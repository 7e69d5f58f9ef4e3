# npm_ci.cmake - `npm ci` in web/ when package-lock.json is newer than the stamp, under a file
# lock: every build tree (build, build-asan, build-fuzz, ...) shares web/node_modules, and two of
# them building at once must not both wipe and refill it.
#
# usage: cmake -DWEB=<web dir> -DNPM=<npm> -DSTAMP=<stamp file> -P cmake/npm_ci.cmake
cmake_minimum_required(VERSION 3.18)

file(LOCK "${WEB}/.npm-ci.lock" GUARD PROCESS TIMEOUT 600 RESULT_VARIABLE locked)
if(NOT locked STREQUAL "0")
  message(FATAL_ERROR "npm_ci.cmake: cannot lock ${WEB}/.npm-ci.lock: ${locked}")
endif()
# another build tree may have installed while this one waited for the lock
if(EXISTS "${STAMP}" AND NOT "${WEB}/package-lock.json" IS_NEWER_THAN "${STAMP}"
   AND NOT "${WEB}/package.json" IS_NEWER_THAN "${STAMP}")
  return()
endif()
message(STATUS "npm ci in ${WEB}")
execute_process(COMMAND "${NPM}" ci --no-audit --no-fund --loglevel=error
  WORKING_DIRECTORY "${WEB}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "npm ci in ${WEB} failed (${rc}): the dashboard's packages come from the npm registry")
endif()
file(TOUCH "${STAMP}")
