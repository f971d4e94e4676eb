# Files of a package from the npm registry, fetched at configure time without npm: the
# registry's tarball, pinned by its SHA-512, kept in a cache outside the source and build
# trees (a fresh clone or a container build finds it there, with no network), and only the
# files named extracted into the build tree.
#
#   nodemesh_npm_tarball(NAME VERSION SHA512_HEX FILES path... OUT variable)
#
# NAME may be scoped (@scope/name). FILES are paths inside the tarball (package/...). OUT
# receives the directory they are extracted under (keeping their paths).
#
# The cache: NODEMESH_NPM_CACHE (a CMake variable, else the environment variable), else
# /var/cache/nodemesh/npm when it can be written, else $HOME/.cache/nodemesh/npm. The
# registry: NODEMESH_NPM_REGISTRY (default https://registry.npmjs.org); a mirror serves the
# same bytes, which the hash checks.
#
# To bump a package: `npm view NAME@VERSION dist.integrity dist.tarball license`, turn the
# integrity (sha512-BASE64) into hex with
#   python3 -c 'import base64,sys; print(base64.b64decode(sys.argv[1][7:]).hex())' sha512-...
# and update the version and hash where this function is called.
include_guard(GLOBAL)

set(NODEMESH_NPM_CACHE "" CACHE PATH
    "Directory of npm tarballs the build fetches (default: environment NODEMESH_NPM_CACHE, \
else /var/cache/nodemesh/npm when writable, else ~/.cache/nodemesh/npm)")
set(NODEMESH_NPM_REGISTRY "https://registry.npmjs.org" CACHE STRING
    "npm registry (or mirror) the build fetches tarballs from")

# The cache directory, made when missing; "" when none can be made.
function(_nodemesh_npm_cache_dir out)
  if(NODEMESH_NPM_CACHE)
    set(candidates "${NODEMESH_NPM_CACHE}")
  elseif(DEFINED ENV{NODEMESH_NPM_CACHE} AND NOT "$ENV{NODEMESH_NPM_CACHE}" STREQUAL "")
    set(candidates "$ENV{NODEMESH_NPM_CACHE}")
  else()
    set(candidates /var/cache/nodemesh/npm)
    if(DEFINED ENV{HOME} AND NOT "$ENV{HOME}" STREQUAL "")
      list(APPEND candidates "$ENV{HOME}/.cache/nodemesh/npm")
    endif()
  endif()
  foreach(dir IN LISTS candidates)
    execute_process(COMMAND sh -c "mkdir -p \"$1\" 2>/dev/null && test -w \"$1\"" sh "${dir}"
                    RESULT_VARIABLE writable OUTPUT_QUIET ERROR_QUIET)
    if(writable EQUAL 0)
      set(${out} "${dir}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

function(nodemesh_npm_tarball name version sha512)
  cmake_parse_arguments(PARSE_ARGV 3 arg "" "OUT" "FILES")
  string(REGEX REPLACE "^.*/" "" basename "${name}")
  set(tarball_name "${basename}-${version}.tgz")
  set(destination "${CMAKE_BINARY_DIR}/npm/${basename}-${version}")

  _nodemesh_npm_cache_dir(cache)
  set(where "${cache}")
  if(NOT cache)
    set(where "/var/cache/nodemesh/npm")
  endif()
  set(advice "Either allow access to ${NODEMESH_NPM_REGISTRY}, or put ${tarball_name} (sha512 \
${sha512}) in ${where} (NODEMESH_NPM_CACHE), e.g. made with `npm pack ${name}@${version}` on a \
machine with access, or configure with -DNODEMESH_DASHBOARD=OFF (meshctl without the dashboard).")
  if(NOT cache)
    message(FATAL_ERROR "the dashboard needs ${name} ${version} from the npm registry, and no "
                        "cache directory for it can be written (NODEMESH_NPM_CACHE, "
                        "/var/cache/nodemesh/npm, ~/.cache/nodemesh/npm). ${advice}")
  endif()
  set(tarball "${cache}/${tarball_name}")

  set(cached FALSE)
  if(EXISTS "${tarball}")
    file(SHA512 "${tarball}" actual)
    if(actual STREQUAL sha512)
      set(cached TRUE)
    else()
      message(STATUS "${tarball} is not ${name} ${version} (sha512 ${actual}): fetching it again")
      file(REMOVE "${tarball}")
    endif()
  endif()
  if(NOT cached)
    # npm's tarball address: scoped packages keep their scope in the path only.
    set(url "${NODEMESH_NPM_REGISTRY}/${name}/-/${tarball_name}")
    message(STATUS "Fetching ${url} into ${cache}")
    # Into a .part, checked, then renamed: a download that fails or does not match must never
    # be taken for the package next time. The hash is checked here rather than by
    # EXPECTED_HASH, which reports an unreachable registry as a hash mismatch of its own.
    file(DOWNLOAD "${url}" "${tarball}.part" TIMEOUT 120 INACTIVITY_TIMEOUT 30 TLS_VERIFY ON
         STATUS status)
    list(GET status 0 code)
    list(GET status 1 reason)
    if(NOT code EQUAL 0)
      file(REMOVE "${tarball}.part")
      message(FATAL_ERROR "the dashboard needs ${name} ${version} from the npm registry, and it "
                          "could not be downloaded from ${url} (${code}: ${reason}). ${advice}")
    endif()
    file(SHA512 "${tarball}.part" actual)
    if(NOT actual STREQUAL sha512)
      file(REMOVE "${tarball}.part")
      message(FATAL_ERROR "${url} is not the ${name} ${version} this build pins: its sha512 is "
                          "${actual}, not ${sha512} (a mirror serving other bytes, or a proxy "
                          "rewriting them). ${advice}")
    endif()
    file(RENAME "${tarball}.part" "${tarball}")
  endif()

  # Extracted again only when a file is missing (the directory's name carries the version).
  set(present TRUE)
  foreach(path IN LISTS arg_FILES)
    if(NOT EXISTS "${destination}/${path}")
      set(present FALSE)
    endif()
  endforeach()
  if(NOT present)
    file(REMOVE_RECURSE "${destination}")
    file(ARCHIVE_EXTRACT INPUT "${tarball}" DESTINATION "${destination}" PATTERNS ${arg_FILES})
    foreach(path IN LISTS arg_FILES)
      if(NOT EXISTS "${destination}/${path}")
        message(FATAL_ERROR "${tarball} has no ${path}: is it ${name} ${version}?")
      endif()
    endforeach()
  endif()
  set(${arg_OUT} "${destination}" PARENT_SCOPE)
endfunction()
