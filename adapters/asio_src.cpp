// SPDX-License-Identifier: Apache-2.0
// The one translation unit that compiles Asio, Asio SSL and Beast (separate compilation keeps
// every other file from instantiating them; BOOST_*_SEPARATE_COMPILATION is set by the build).
#include <boost/asio/impl/src.hpp>
#if GW_WITH_TLS
#include <boost/asio/ssl/impl/src.hpp>
#endif
#include <boost/beast/src.hpp>
