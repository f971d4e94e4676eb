# Compresses INPUT into OUTPUT (gzip, level 9), as the dashboard serves it.
#   cmake -DINPUT=file -DOUTPUT=file.gz -P gzip.cmake
file(ARCHIVE_CREATE OUTPUT "${OUTPUT}.tmp" PATHS "${INPUT}" FORMAT raw COMPRESSION GZip
     COMPRESSION_LEVEL 9)
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
