// SPDX-License-Identifier: Apache-2.0
// Built-in lookup tables for synthpop (see tables.h). Names are common UK names, a few with
// non-ASCII letters so consumers are exercised on UTF-8.
#include "tools/synthpop/tables.h"

#include <array>

namespace synthpop::tables {
namespace {

using namespace std::string_view_literals;

constexpr std::array kFamily = {
    "Smith"sv, "Jones"sv, "Williams"sv, "Taylor"sv, "Brown"sv, "Davies"sv, "Evans"sv,
    "Wilson"sv, "Thomas"sv, "Johnson"sv, "Roberts"sv, "Robinson"sv, "Thompson"sv, "Wright"sv,
    "Walker"sv, "White"sv, "Edwards"sv, "Hughes"sv, "Green"sv, "Hall"sv, "Lewis"sv, "Harris"sv,
    "Clarke"sv, "Patel"sv, "Jackson"sv, "Wood"sv, "Turner"sv, "Martin"sv, "Cooper"sv, "Hill"sv,
    "Ward"sv, "Morris"sv, "Moore"sv, "Clark"sv, "Lee"sv, "King"sv, "Baker"sv, "Harrison"sv,
    "Morgan"sv, "Allen"sv, "James"sv, "Scott"sv, "Phillips"sv, "Watson"sv, "Davis"sv,
    "Parker"sv, "Price"sv, "Bennett"sv, "Young"sv, "Griffiths"sv, "Mitchell"sv, "Kelly"sv,
    "Cook"sv, "Carter"sv, "Richardson"sv, "Bailey"sv, "Collins"sv, "Bell"sv, "Shaw"sv,
    "Murphy"sv, "Miller"sv, "Cox"sv, "Richards"sv, "Khan"sv, "Marshall"sv, "Anderson"sv,
    "Simpson"sv, "Ellis"sv, "Adams"sv, "Singh"sv, "Begum"sv, "Wilkinson"sv, "Foster"sv,
    "Chapman"sv, "Powell"sv, "Webb"sv, "Rogers"sv, "Gray"sv, "Mason"sv, "Ali"sv, "Hunt"sv,
    "Hussain"sv, "Campbell"sv, "Matthews"sv, "Owen"sv, "Palmer"sv, "Holmes"sv, "Mills"sv,
    "Barnes"sv, "Knight"sv, "Lloyd"sv, "Butler"sv, "Russell"sv, "Barker"sv, "Fisher"sv,
    "Stevens"sv, "Jenkins"sv, "Murray"sv, "Dixon"sv, "Harvey"sv, "Ahmed"sv, "Okafor"sv,
    "Adeyemi"sv, "Mensah"sv, "Nowak"sv, "Kowalski"sv, "Chen"sv, "Nguyen"sv, "O'Connor"sv,
    "Ó Briain"sv, "Ní Bhriain"sv, "Müller"sv, "Wiśniewski"sv, "Núñez"sv, "Brontë"sv,
};

constexpr std::array kMale = {
    "Oliver"sv, "George"sv, "Harry"sv, "Noah"sv, "Jack"sv, "Leo"sv, "Arthur"sv, "Muhammad"sv,
    "Oscar"sv, "Charlie"sv, "Jacob"sv, "Thomas"sv, "Henry"sv, "William"sv, "James"sv,
    "Alfie"sv, "Joshua"sv, "Freddie"sv, "Archie"sv, "Ethan"sv, "Isaac"sv, "Alexander"sv,
    "Joseph"sv, "Edward"sv, "Samuel"sv, "Max"sv, "Daniel"sv, "Logan"sv, "Lucas"sv, "Dylan"sv,
    "David"sv, "John"sv, "Michael"sv, "Paul"sv, "Peter"sv, "Robert"sv, "Richard"sv, "Mark"sv,
    "Andrew"sv, "Stephen"sv, "Christopher"sv, "Anthony"sv, "Kevin"sv, "Gary"sv, "Ian"sv,
    "Simon"sv, "Graham"sv, "Keith"sv, "Colin"sv, "Derek"sv, "Kenneth"sv, "Ronald"sv,
    "Dafydd"sv, "Rhys"sv, "Seán"sv, "Ciarán"sv, "Séamus"sv, "Amir"sv, "Raj"sv, "Tomasz"sv,
    "Chidi"sv, "Kwame"sv,
};

constexpr std::array kFemale = {
    "Olivia"sv, "Amelia"sv, "Isla"sv, "Ava"sv, "Mia"sv, "Ivy"sv, "Lily"sv, "Isabella"sv,
    "Rosie"sv, "Sophia"sv, "Grace"sv, "Freya"sv, "Florence"sv, "Willow"sv, "Evie"sv,
    "Poppy"sv, "Ella"sv, "Emily"sv, "Charlotte"sv, "Sienna"sv, "Elsie"sv, "Daisy"sv, "Ruby"sv,
    "Alice"sv, "Sophie"sv, "Jessica"sv, "Hannah"sv, "Lucy"sv, "Chloe"sv, "Emma"sv, "Sarah"sv,
    "Susan"sv, "Margaret"sv, "Patricia"sv, "Elizabeth"sv, "Mary"sv, "Jennifer"sv, "Linda"sv,
    "Karen"sv, "Helen"sv, "Julie"sv, "Joanne"sv, "Claire"sv, "Rachel"sv, "Nicola"sv,
    "Deborah"sv, "Janet"sv, "Jean"sv, "Dorothy"sv, "Joan"sv, "Barbara"sv, "Shirley"sv,
    "Siân"sv, "Rhiannon"sv, "Aoife"sv, "Niamh"sv, "Eilís"sv, "Zoë"sv, "Chloë"sv, "Fatima"sv,
    "Aisha"sv, "Priya"sv, "Agnieszka"sv, "Ngozi"sv,
};

constexpr std::array kStreets = {
    "High Street"sv, "Station Road"sv, "Church Street"sv, "Church Road"sv, "Main Street"sv,
    "Park Road"sv, "Victoria Road"sv, "Green Lane"sv, "Manor Road"sv, "Mill Lane"sv,
    "Queens Road"sv, "Kings Road"sv, "New Road"sv, "Grange Road"sv, "The Avenue"sv,
    "School Lane"sv, "North Street"sv, "York Road"sv, "Albert Road"sv, "Springfield Road"sv,
    "Chestnut Grove"sv, "Oak Avenue"sv, "Windsor Road"sv, "The Crescent"sv, "Highfield Road"sv,
    "Mill Road"sv, "Alexandra Road"sv, "Stanley Road"sv, "George Street"sv, "Beech Grove"sv,
    "Cedar Close"sv, "Meadow View"sv, "Orchard Way"sv, "West Street"sv, "London Road"sv,
    "Wellington Road"sv, "Brook Street"sv, "Riverside Walk"sv, "Heol y Felin"sv, "Ffordd Las"sv,
};

constexpr std::array kLeeds = {"LS1"sv, "LS2"sv, "LS6"sv, "LS7"sv, "LS11"sv, "LS17"sv};
constexpr std::array kManchester = {"M1"sv, "M13"sv, "M14"sv, "M20"sv, "M4"sv};
constexpr std::array kBirmingham = {"B1"sv, "B5"sv, "B15"sv, "B29"sv, "B13"sv};
constexpr std::array kNewcastle = {"NE1"sv, "NE2"sv, "NE4"sv, "NE6"sv};
constexpr std::array kBristol = {"BS1"sv, "BS6"sv, "BS8"sv, "BS3"sv};
constexpr std::array kCardiff = {"CF10"sv, "CF11"sv, "CF24"sv};
constexpr std::array kLondon = {"E1"sv,   "E14"sv, "N1"sv,  "N7"sv,   "NW3"sv, "SE1"sv,
                                "SE15"sv, "SW2"sv, "SW1A"sv, "W2"sv,  "W12"sv, "EC1A"sv};
constexpr std::array kLiverpool = {"L1"sv, "L8"sv, "L15"sv, "L17"sv};
constexpr std::array kSheffield = {"S1"sv, "S10"sv, "S11"sv, "S6"sv};
constexpr std::array kNottingham = {"NG1"sv, "NG7"sv, "NG5"sv};
constexpr std::array kLeicester = {"LE1"sv, "LE2"sv, "LE4"sv};
constexpr std::array kYork = {"YO1"sv, "YO10"sv, "YO31"sv};
constexpr std::array kNorwich = {"NR1"sv, "NR2"sv, "NR4"sv};
constexpr std::array kExeter = {"EX1"sv, "EX2"sv, "EX4"sv};
constexpr std::array kPlymouth = {"PL1"sv, "PL4"sv, "PL6"sv};
constexpr std::array kSouthampton = {"SO14"sv, "SO15"sv, "SO17"sv};
constexpr std::array kBrighton = {"BN1"sv, "BN2"sv, "BN3"sv};
constexpr std::array kOxford = {"OX1"sv, "OX3"sv, "OX4"sv};
constexpr std::array kCambridge = {"CB1"sv, "CB2"sv, "CB4"sv};
constexpr std::array kHull = {"HU1"sv, "HU3"sv, "HU5"sv};
constexpr std::array kCoventry = {"CV1"sv, "CV2"sv, "CV4"sv};
constexpr std::array kBradford = {"BD1"sv, "BD3"sv, "BD7"sv, "BD9"sv};

constexpr std::array kCities = {
    City{"London", kLondon, 160, "Synthetic London Borough Council"},
    City{"Birmingham", kBirmingham, 20, "Synthetic Birmingham City Council"},
    City{"Leeds", kLeeds, 14, "Synthetic Leeds City Council"},
    City{"Manchester", kManchester, 10, "Synthetic Manchester City Council"},
    City{"Sheffield", kSheffield, 10, "Synthetic Sheffield City Council"},
    City{"Bradford", kBradford, 9, "Synthetic Bradford Council"},
    City{"Liverpool", kLiverpool, 9, "Synthetic Liverpool City Council"},
    City{"Bristol", kBristol, 8, "Synthetic Bristol City Council"},
    City{"Cardiff", kCardiff, 6, "Synthetic Cardiff Council"},
    City{"Leicester", kLeicester, 6, "Synthetic Leicester City Council"},
    City{"Coventry", kCoventry, 6, "Synthetic Coventry City Council"},
    City{"Nottingham", kNottingham, 6, "Synthetic Nottingham City Council"},
    City{"Newcastle upon Tyne", kNewcastle, 5, "Synthetic Newcastle City Council"},
    City{"Kingston upon Hull", kHull, 5, "Synthetic Hull City Council"},
    City{"Plymouth", kPlymouth, 5, "Synthetic Plymouth City Council"},
    City{"Southampton", kSouthampton, 5, "Synthetic Southampton City Council"},
    City{"Brighton", kBrighton, 5, "Synthetic Brighton and Hove City Council"},
    City{"York", kYork, 4, "Synthetic York Council"},
    City{"Norwich", kNorwich, 3, "Synthetic Norfolk County Council"},
    City{"Exeter", kExeter, 3, "Synthetic Devon County Council"},
    City{"Oxford", kOxford, 3, "Synthetic Oxfordshire County Council"},
    City{"Cambridge", kCambridge, 3, "Synthetic Cambridgeshire County Council"},
};

constexpr std::array kAgeBands = {
    AgeBand{0, 5, 32},   AgeBand{5, 10, 35},  AgeBand{10, 15, 35}, AgeBand{15, 20, 32},
    AgeBand{20, 25, 34}, AgeBand{25, 30, 37}, AgeBand{30, 35, 39}, AgeBand{35, 40, 38},
    AgeBand{40, 45, 36}, AgeBand{45, 50, 35}, AgeBand{50, 55, 38}, AgeBand{55, 60, 38},
    AgeBand{60, 65, 33}, AgeBand{65, 70, 28}, AgeBand{70, 75, 27}, AgeBand{75, 80, 22},
    AgeBand{80, 85, 14}, AgeBand{85, 90, 8},  AgeBand{90, 95, 4},  AgeBand{95, 101, 1},
};

}  // namespace

std::span<const std::string_view> family_names() { return kFamily; }
std::span<const std::string_view> male_given_names() { return kMale; }
std::span<const std::string_view> female_given_names() { return kFemale; }
std::span<const std::string_view> street_names() { return kStreets; }
std::span<const City> cities() { return kCities; }
std::span<const AgeBand> age_bands() { return kAgeBands; }

}  // namespace synthpop::tables
