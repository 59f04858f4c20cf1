#!/usr/bin/env python3
"""Writes the bundled sample DiscordChatExporter export (tests/fixtures/sample-export.csv and its
JSON twin) from the conversation below.

Provenance: every message in THREADS was written by hand for doppel (issue 18) by a helper
engineer of the project; it is fiction, in English, and quotes nobody. Six friends over nine
weeks (March 1 to May 5, 2024): the persona `mossy` (renamed `mossy.exe` from March 18, same
id), Theo, priya.k, Sam Walker, juno and Theo's uncle Ray (`OldTimer#4821`, a legacy name),
plus the Dyno bot. Threads: a goose that chased mossy (the running joke), a game night and its
rematch, priya's organic chemistry exam, a disagreement over the cost of a trip and its
resolution, Sam's band, a cabin trip, job and internship news; links, attachments, reactions
and DCE system messages included. mossy's style is her own: never a capital letter, slang
(ngl, fr, rn, u, bestie), the 💀/😭 emoji, bursts of short messages. Everyone else writes
capitalized sentences (Sam mostly lowercase but with full words and no emoji habit).

Only the timing is generated: each thread starts at its header's local time (US Eastern, so
the export's offset changes from -05:00 to -04:00 at the DST change of March 10), messages
follow 2-200 s apart (a few seconds within one author's burst), and `~ 40m` lines are silences
that split a thread into two sessions (prep's 5-minute rule). The jitter comes from --seed.

Line format: `c: text`, c one of the AUTHORS codes; `\n` in text is a newline; `!text` is a
DCE system message; `<<url,url>>` are attachments; `{{emoji (n),...}}` are reactions.

  make_sample_export.py --out tests/fixtures/sample-export.csv           (the 1,500 messages)
  make_sample_export.py --format json --out sample.json                  (same messages as DCE JSON)
  make_sample_export.py --messages 600000 --out /tmp/big.csv             (the benchmark input: the
                                                                          threads repeated, shifted)
  make_sample_export.py --reverse --crlf ...                             (newest first, CRLF)
"""
import argparse, datetime, json, random, re

AUTHORS = {
    "m": ("829104736521048064", "mossy"),
    "t": ("412345678901234567", "Theo"),
    "p": ("523456789012345678", "priya.k"),
    "s": ("634567890123456789", "Sam Walker"),
    "j": ("745678901234567890", "juno"),
    "o": ("301245678901234567", "OldTimer#4821"),
    "d": ("155149108183695360", "Dyno#3861"),
}
BOT_ID = AUTHORS["d"][0]
# mossy renames herself in this thread (same id): prep resolves the name to every id.
RENAME_THREAD = "new name"
PERSONA_LATER = "mossy.exe"

THREADS = r"""
# 2024-03-01 17:52 the server, and the goose
o: !Joined the server.
d: Welcome @OldTimer to the server! Read #rules and grab a role.
t: Everyone, this is my uncle Ray. He asked to see what "the group chat" is. Be nice.
o: Hello all. Theo tells me this is where the plans get made... I promise to mostly lurk.
j: Welcome, Ray. Nothing gets made here. We just talk about making plans.
p: Hi Ray! Welcome :)
s: welcome welcome
m: hiii ray
m: welcome to the chaos
m: ok i have to tell u all something
m: i got chased by a goose today 😭
m: like full sprint
m: across the whole park
t: Why did a goose chase you?
m: i was holding a bagel
m: that's it
m: that's the whole crime
j: The goose saw a bagel and made a rational decision.
m: it was not rational it hissed at me like i owed it money 💀
p: Did it get the bagel??
m: no bc i threw it
m: the bagel
m: not the goose
s: haha the goose won
m: the goose won ngl
m: i have never run that fast in my life
o: Geese are territorial in early spring. Nesting season. You likely walked too close to a nest.
m: ray already dropping goose facts on day one 😭
m: i respect it
t: Ray knows a lot about birds. Do not get him started on herons.
o: Herons are fascinating animals, for the record.
m: noted
m: anyway i'm never going to that park again
m: the goose owns it now
j: Long live the goose.
# 2024-03-02 11:14 game night, picking a date
t: Okay, game night. I want to actually do it this time. Who is free next Saturday, the 9th?
p: I can do the 9th! My exam is on the 14th so I need a fun night before I disappear.
s: 9th works for me
j: I'm free after 6.
m: yes
m: me
m: i'm free
m: i'm always free i have no life 🫠
t: Great. My place, 7pm. Now the real question: which game?
j: Not Monopoly. I will leave.
t: Nobody said Monopoly.
j: I'm saying it preemptively.
m: catan pls
m: i want to be the sheep queen again
p: Mossy you hoarded every sheep last time and refused all trades
m: and i won
m: so
p: That's not the point!!
s: i vote jackbox, more people can play
t: We can do both. Catan first, Jackbox when people get tired of Catan.
m: nobody gets tired of catan
m: u just get tired of losing to me
j: Bold words from someone who lost to Ray's dog at Uno.
m: that dog cheated
m: i stand by it
o: Biscuit does not cheat. Biscuit simply plays a long game.
m: biscuit is a menace and everyone knows it 😭
t: Okay. Catan, then Jackbox. I'll make a list of snacks later.
m: i'll bring the chips
m: the spicy ones
m: the ones that make sam cry
s: they do not make me cry
s: they make my eyes water. different thing
m: sure sam 💀
# 2024-03-02 21:40 sam's music
s: been listening to this all day https://open.spotify.com/album/4m2880jivSbbyEGAKfITCa
s: it's like if a lighthouse made an album
p: What does that even mean haha
s: you'll see
m: ok i'm listening
m: sam
m: this is so good wtf
m: track 3??
m: i'm literally in a field now
m: emotionally
s: track 3 is the one
s: the drums come in at like 2 minutes
m: the drums 😭😭
m: i'm adding it to my sad girl walk playlist
j: You have a playlist called sad girl walk?
m: i have four playlists called sad girl walk
m: sad girl walk 1 through 4
m: it's a series
j: Naturally.
s: honored to be in the series
m: u should be
# 2024-03-04 16:20 study group for the exam
p: Okay I need help. Organic chemistry midterm is on the 14th and I am not okay.
p: Is anyone free to study with me this week? Or just sit with me while I study so I don't doom scroll.
m: me!!
m: i can quiz u
m: i know nothing about chemistry but i can read flashcards very dramatically
p: Honestly that would help so much
t: I can do Wednesday evening. I took orgo two years ago, I might remember something.
j: Theo remembers nothing. He told me a benzene ring was "the hexagon one".
t: It IS the hexagon one.
p: That's technically true haha
m: library tmrw at 4?
m: the quiet floor
m: i'll bring snacks but the quiet ones
p: Yes! Library at 4. Thank you Mossy :)
m: ofc bestie
m: we're gonna destroy this exam
m: respectfully
# 2024-03-05 10:03 theo's bug
t: Work question for the programmers here. Why does this print the same number three times?
t: ```py\nfs = [lambda: i for i in range(3)]\nprint([f() for f in fs])\n```
j: Late binding. Every lambda sees the last i.
t: So it prints [2, 2, 2]?
j: Yes. Use a default argument: lambda i=i: i
o: Same trap in JavaScript before let existed. Some bugs are older than you are.
t: That fixed it. Thank you both.
m: i understood none of this
m: but i'm proud of u
m: good job theo
t: Thanks Mossy.
m: what does lambda mean
j: A tiny function with no name.
m: oh that's so sad
m: little guy doesn't even have a name 😭
s: lmao
# 2024-03-05 16:02 library
p: I'm here, second floor, by the windows
m: omw
m: the bus is late
m: of course it is
m: ok here
m: i see u
m: ur hair looks so good today btw
p: Stop, I haven't washed it in two days
m: it's working for u
~ 55m
p: Okay we did the first two chapters. My brain is soup.
m: she's doing amazing sweetie
m: she knows what a carbocation is now
p: I knew that before!
m: u knew it better now
t: Proud of you both. Same thing tomorrow?
p: Tomorrow is lab, so Wednesday with you, Theo
m: i'll come wed too
m: for moral support
m: and the vending machine
# 2024-03-06 08:47 goose update
m: goose update
m: i took the long way around the park
m: and the goose was there
m: on the sidewalk
m: outside the park
m: it's expanding its territory 😭 <<https://cdn.discordapp.com/attachments/1/2001/goose_sidewalk.jpg>>
j: It's following you.
m: don't say that
m: juno don't say that
j: It knows your route. It knows about the bagel.
m: i'm moving cities
s: that goose looks like it pays rent
m: it looks like it owns the building {{😭 (3),🪿 (2)}}
o: That is a Canada goose. Lovely specimen. Very healthy.
m: ray whose side are u on
o: The goose's, respectfully.
m: betrayal
m: on day six
t: Maybe bring it a bagel. Make peace.
m: i'm not negotiating with terrorists
# 2024-03-06 18:30 orgo with theo
t: Priya, I'm at the table near the printers.
p: Coming! Mossy is getting snacks
m: the vending machine ate my dollar
m: it's a goose situation all over again
m: everything in this city wants to take from me
t: It's a vending machine, not a goose.
m: same energy
~ 70m
p: Theo explained reaction mechanisms with salt and pepper shakers and I think I finally get it
t: The pepper was the nucleophile.
m: the pepper was so brave
m: it attacked that carbon with no hesitation
p: Mossy narrated the whole thing like a nature documentary haha
m: and here we see the nucleophile
m: approaching its prey
m: the leaving group does not know what is coming
j: I'm sad I missed this.
m: it was cinema
# 2024-03-07 20:15 snacks for saturday
t: Game night is Saturday, 7pm, my place. Snack list so far:\n- Mossy: spicy chips\n- Priya: brownies\n- Sam: drinks\n- Me: pizza\nJuno, Ray, anything you want to add?
j: I'll bring the good hummus. Not the grocery store one.
o: I will bring my famous seven-layer dip. It has eight layers now. I improved it.
m: ray the dip has a patch update 😭
m: seven layer dip 2.0
o: Version 1.1. Let's not overstate it.
s: what drinks does everyone want
p: Something without caffeine please, I need to sleep that week
m: lemonade!!
m: the pink one
m: it's the same as the yellow one but it tastes better bc it's pink
s: that's not how taste works
m: it is for me
t: Also, the address for Ray: 41 Linden Street, the blue door. Buzzer is broken, just text me.
o: Noted. I will text. I know how.
j: He does know how. He sends texts that end with "Love, Ray".
o: It is polite to sign your letters.
m: love, ray 😭😭
m: i'm gonna start doing that
m: love, mossy
# 2024-03-08 22:51 late night
m: is anyone awake
m: i can't sleep
m: i keep thinking about catan strategy
s: i'm up
s: what's the strategy
m: ok so
m: wood and brick early
m: then longest road
m: then i become unstoppable
m: then i take everyone's sheep
s: very normal plan
m: thank u
s: go to sleep mossy
m: no u
s: i'm literally in bed
m: ok fine
m: gn sam
m: love, mossy
s: lol gn
# 2024-03-09 18:55 game night
t: Door is unlocked, come up to the third floor.
p: Parking now! I have the brownies
m: i'm on the bus
m: i have the chips
m: the bus smells like soup
m: i'm choosing to find that cozy
j: Ray and I are walking up now.
o: I brought the dip and my lucky dice.
t: We have dice, Ray.
o: Not lucky ones.
~ 40m
s: ok i got here late, who's winning
t: Nobody yet, we just set up. Mossy already took the sheep port.
m: i did
m: i regret nothing
m: the sheep and i have an understanding
~ 1h 5m
j: For the record, Mossy has 11 sheep.
m: 12
m: keep up juno
p: I will give you one wheat for one sheep
m: no
p: Two wheat
m: no
p: Mossy!!
m: the sheep are not for sale
m: the sheep are family
t: This is why nobody trades with you.
m: i don't need trades
m: i have sheep
~ 50m
o: Longest road. Sorry, Mossy.
m: ray!!
m: ray what did u just do
m: ray with the lucky dice
m: the dice were a lie ray
o: I told you they were lucky.
j: Ray wins. Ray has won game night on his first game night.
m: i want a rematch
m: next week
m: and ray has to use normal dice
t: Jackbox time. Everyone get your phones out.
# 2024-03-10 13:12 the morning after
t: !Started a call that lasted 184 minutes.
t: Thanks for coming last night, everyone. That was the most fun I've had in months.
p: Same!! Thank you for hosting Theo
s: 10/10 would lose to ray again
m: i would not
m: i'm still thinking about the road
m: the longest road
m: it haunts me
o: I had a wonderful time. Biscuit missed me, though. He sulked all morning.
m: biscuit deserves better
m: tell him mossy says hi
o: I will pass it along.
j: Photos from last night. <<https://cdn.discordapp.com/attachments/1/2101/IMG_4411.jpg,https://cdn.discordapp.com/attachments/1/2101/IMG_4412.jpg>>
m: juno why does every photo of me have my mouth open
j: Because your mouth is always open.
m: fair
m: i was talking about sheep probably
p: The one where Sam is holding the brownie plate like a trophy 😂
s: that was a proud moment
t: !Pinned a message.
t: Pinned Juno's photos so we don't lose them.
m: immortalized
m: me and my open mouth
# 2024-03-10 22:30 daylight saving
m: wait why is it 10:30
m: i swear it was 9 like a second ago
j: Daylight saving time. We lost an hour last night.
m: who took it
m: who took my hour
j: The government.
m: i want it back
m: i had plans for that hour
p: I had plans for that hour too!! It was supposed to be study time
o: The hour comes back in November. With interest, sadly, no.
m: ray the economist now too
m: is there anything u don't know
o: Plenty. I do not understand your music at all.
m: that's ok ray
m: nobody does
m: that's the point
# 2024-03-11 15:40 priya spiraling
p: Three days until the exam and I just realized I haven't looked at chapter 9
p: Chapter 9 is the whole second half
m: ok deep breath
m: we can do chapter 9
m: how many pages
p: 42
m: ok that's like 14 pages a day
m: that's nothing
m: u read 14 pages of fanfic in like 10 min
p: That is different!!
m: is it tho
t: Make a plan for each day and only look at today's part. That's how I got through it.
p: Okay. Okay yes. Today is 9.1 to 9.4.
m: and i'm bringing flashcards to the library again
m: the dramatic voice is back
p: Thank you both. Seriously.
m: ofc
m: u got this fr
# 2024-03-12 17:05 flashcards
m: ok question 1
m: what is an sn2 reaction
p: One step, backside attack, inversion of configuration
m: correct!!!
m: the crowd goes wild
m: question 2
m: what is the best catan resource
p: That's not chemistry
m: answer the question priya
p: Sheep
m: correct
m: ur gonna pass
j: Mossy is teaching chemistry now?
m: i'm teaching priorities
~ 1h 20m
p: We did 30 flashcards and I got 26 right
m: 26 out of 30!!
m: and 2 of the wrong ones were trick questions about sheep
p: Thank you Mossy. Genuinely. This helped so much
m: anytime bestie
m: now go sleep
m: sleep is studying
m: for ur brain
# 2024-03-13 21:10 night before the exam
p: Exam is at 9am tomorrow. I'm going to bed at 10. That is the plan.
t: Good plan. Don't study after nine. You know it already.
j: You'll be fine. You got 26 out of 30 on flashcards made by someone who thinks sheep are a chemistry topic.
m: sheep are a chemistry topic
m: they're made of chemicals
j: Everything is made of chemicals.
m: exactly
m: so i'm right
s: good luck priya!! you're going to crush it
o: Best of luck tomorrow, Priya. Eat a real breakfast. Protein, not just coffee.
p: Yes Ray haha. Eggs. I promise.
m: priya
m: listen to me
m: u are smart
m: u are prepared
m: u know what a carbocation is
m: go to sleep
p: Going. Thank you all ❤️
m: ❤️❤️
m: love, mossy
# 2024-03-14 11:32 exam day
p: DONE
p: It's over
m: priya!!
m: how was it
m: tell me everything
p: I think it went okay?? There was a huge SN1 vs SN2 question and I knew it
m: the flashcards!!!
m: the dramatic voice worked
t: Proud of you. Seriously.
p: There was one mechanism I had no idea about but everything else was fine
j: One mystery mechanism out of a whole exam is a win.
s: celebration tonight?
p: YES. I want noodles. Big noodles.
m: big noodles 😭
m: the place on 5th?
p: The place on 5th!
t: 7:30? I'll book a table for six.
o: Count me out tonight, friends. Biscuit has a vet appointment. Have fun!
m: give biscuit a kiss from me
m: and a sheep
o: He does not need a sheep.
m: everyone needs a sheep ray
# 2024-03-14 22:48 after noodles
m: those were the biggest noodles i've ever seen
m: i'm so full i'm horizontal
s: i think i ate my body weight in dumplings
p: Thank you for tonight everyone. Best exam day ever
j: Best exam day is a low bar, but yes. Good night.
m: juno ur so warm and fuzzy
m: like a cactus
j: Thank you.
# 2024-03-15 19:20 the trip
t: Okay, spring break trip. I found a cabin by Lake Arrow, two nights, April 5th to 7th. It's $640 total. Link: https://www.airbnb.com/rooms/48213377
s: oh that looks nice
p: That's $107 each if six of us go!
j: I can't do $107 right now. Rent went up.
t: It's two nights, Juno. That's cheap for a cabin.
j: It's not cheap for me. I'd rather do a day trip to the city. Train, museum, food. Forty bucks.
t: We did the city last year. The whole point is getting away.
j: The whole point is being together. We can do that for forty dollars.
m: ok wait
m: both of these are good
m: can we not fight pls
t: I'm not fighting. I'm just saying I already looked into the cabin a lot.
j: And I'm just saying I already looked at my bank account.
m: ok what if
m: we split it by what people can pay
m: like theo and sam pay a bit more
s: i'm fine with that
t: I don't love that. Then it's not fair to the people paying more.
j: So it's fair that I can't come?
t: That's not what I said.
j: It's kind of what you said.
m: guys
m: pls
o: If I may... when money is tight, the fairest plan is the one everyone can join. The lake will still be there next year.
t: Okay. Let me think about it. I'm not trying to leave anyone out.
j: I know. Sorry, I'm tired.
m: let's do a poll tmrw
m: when nobody is tired
m: and nobody is hungry
m: hungry people should not make decisions
p: Agreed. Poll tomorrow.
# 2024-03-16 12:05 the poll
t: Okay, I thought about it. I found a smaller cabin, same lake, one night instead of two. $300 total, so $50 each. And I'll drive, so no train tickets. https://www.airbnb.com/rooms/51702210
j: That's actually really thoughtful. Thank you, Theo.
t: Poll: react 1 for the small cabin on the 5th, 2 for the city day trip.
p: 1!
s: 1
j: 1. Sorry about last night. I got defensive.
t: Me too. We're good.
m: yay
m: the group is healed
m: everyone hug
m: virtually
m: i'm hugging my phone rn
o: 1, if I am invited. I can bring the camping stove.
t: Of course you're invited, Ray.
m: ray is always invited
m: ray has lucky dice
m: we need the dice
j: Mossy, your vote?
m: oh
m: 1 obviously
m: i was just busy hugging
# 2024-03-16 20:33 sam's gig
s: ok so my band got a gig. next sunday the 24th, the Copper Room, 9pm
s: it's free but you have to be 21
m: sam!!
m: ur band???
m: since when do u have a band
s: since like october
m: and u didn't tell us!!
s: i didn't want to say anything until we were good
m: sam ur always good
m: ur the lighthouse album guy
m: i'm coming
m: i'm bringing a sign
s: please don't bring a sign
m: too late i already have ideas
p: I'll be there!! What's the band called?
s: Low Tide Club
j: That's a good name, which annoys me.
t: We'll all be there, Sam.
m: low tide club 😭
m: i'm making merch
s: we don't have merch
m: u will
# 2024-03-17 14:10 st patrick's
o: Happy St. Patrick's Day, all. I am wearing my green sweater. Biscuit is wearing his green bandana. <<https://cdn.discordapp.com/attachments/1/2301/biscuit_bandana.jpg>>
m: biscuit!!
m: he looks so proud
m: he knows he's handsome
m: ray this is the best thing anyone has ever posted here
j: Finally, a photo better than the goose photo.
m: nothing is better than the goose photo
m: but biscuit comes close
o: I will tell him.
t: Is anyone going to the parade?
p: I have to work :(
s: i'm going for like an hour
m: i'm not going
m: too many people
m: too many people in hats
# 2024-03-18 09:14 new name
m: changed my name to mossy.exe
m: bc i'm a computer now
m: i only run on iced coffee and spite
j: Did you restart recently? You seem to have a bug.
m: ur the bug juno
t: Tell us if you need an update.
m: i need a nap
m: that's the only update
p: I love it haha
o: Is it "mossy dot e x e" or "mossy exe"? I want to say it right.
m: ray ur so sweet
m: it's mossy dot exe
m: like a program
m: a program that's tired
t: !Changed the channel name: general-chat
t: Renamed the channel. "general" felt too corporate.
j: "general-chat" is less corporate?
t: It has a dash. Dashes are friendly.
j: I have never heard that said about a dash.
s: the dash is fine
s: leave the dash alone
# 2024-03-19 17:45 the goose has a family
m: guys
m: guys
m: the goose
m: has babies
m: there are like six tiny geese <<https://cdn.discordapp.com/attachments/1/2401/goslings.jpg>>
p: Oh my god they're so small!!
s: ok that's adorable
j: This explains the hostility. It was protecting its kids.
m: i feel so bad now
m: i called her a terrorist
m: she was just a mom
m: a mom who hates bagels
o: Goslings hatch in about a month. She was sitting on the eggs when you walked by. Perfectly reasonable of her.
m: ray u were right
m: i forgive the goose
m: the goose is valid
t: Character development.
m: i'm gonna name them
m: bagel 1 through 6
j: Of course.
# 2024-03-20 12:30 lunch talk
t: Anyone want to get lunch near campus on Friday?
p: Friday I have lab until 1. Could do 1:30?
s: 1:30 works
j: I'm working from home Friday, so I can come. Where?
t: Taco truck by the library?
m: yes
m: the taco truck
m: the one with the guy who calls everyone boss
p: He called me boss last week and I felt so powerful
m: he called me chief
m: i think chief is higher than boss
j: It is not a ranking system.
m: it is to me
t: Taco truck, Friday, 1:30.
# 2024-03-21 19:02 movie plans
s: has anyone seen dune part two yet
p: No! I want to though
t: I saw it. It's incredible. I'd see it again.
j: I haven't. I'm in if it's the IMAX one.
m: i haven't seen part one
m: is that a problem
t: Kind of, yes.
m: can u explain it in three sentences
t: A family moves to a desert planet for a spice business. They get betrayed. The son goes to live with the desert people and has visions.
m: ok so it's a family business drama
m: in sand
j: That is a very accurate summary.
m: ok i'm in
m: i'll watch part one this weekend
m: or i'll read the wikipedia
s: saturday 7pm imax? tickets are 18 https://www.fandango.com/dune-part-two-2024-235308/movie-overview
t: I'll buy six. Venmo me.
o: I saw the first one in theatres. The sound made my chair shake. I'm in.
m: ray going to imax 😭
m: icon behavior
# 2024-03-22 13:35 taco truck
t: At the truck. The line is short today.
s: 2 min away
p: Running a little late, lab ran over. Order me the al pastor please!
j: I'm here. Theo, you have sauce on your shirt already.
t: I haven't even eaten yet. That's from breakfast.
m: here
m: he called me chief again
m: the ranking holds
p: Here! Thank you for ordering
~ 45m
j: Good lunch. Back to work.
p: Thanks guys, I needed that. Lab was rough
m: what happened in lab
p: I dropped a beaker. A clean one. Nothing spilled but everyone turned around
m: nooo
m: the shame walk
m: i've been there
m: not with a beaker
m: with a whole tray of lasagna at my cousin's wedding
s: wait what
m: we don't talk about it
# 2024-03-23 22:40 after dune
t: So? What did everyone think?
j: It was great. The sandworm riding scene alone was worth it.
p: I was so stressed the whole time haha. The music!!
s: the sound design was insane, the whole theatre was shaking
o: My chair shook again. Wonderful. My ears are ringing a little.
m: ok so
m: i did not watch part one
m: or read the wikipedia
m: and i still cried
t: How did you cry without knowing the story?
m: i don't need to know the story
m: i felt the vibes
m: the sand was sad
j: The sand was not sad.
m: the sand was devastated juno
s: who was your favorite
m: the big worm
m: obviously
m: he did nothing wrong
p: Team worm
t: The worm was not a character.
m: the worm was the main character theo
m: open ur eyes
# 2024-03-24 20:10 low tide club
s: we go on at 9:15, soundcheck is in 10 min. i'm so nervous
t: You'll be great. We're on our way.
p: We have the sign
s: oh no
p: Mossy made a sign
m: it's tasteful
m: it says low tide club
m: and there's a little crab
m: the crab is the mascot now
s: we don't have a mascot
m: u do now
j: It is a very good crab, to be fair.
o: I'm parking. Is there a cover charge? I brought cash just in case.
s: no cover! thanks for coming ray
~ 1h 30m
m: sam!!
m: sam u were so good!!
m: the second song??
m: i was screaming
t: That was fantastic. The whole place was into it.
p: I have like 40 videos <<https://cdn.discordapp.com/attachments/1/2501/lowtide_live.mp4>>
j: Genuinely impressed. I expected to be polite, and instead I enjoyed it.
s: thank you guys so much. seeing the crab sign from the stage almost made me laugh during the slow song
m: the crab was supporting u
m: emotionally
o: A wonderful evening. Your drummer is very talented. Tell him to keep his wrists loose.
s: i'll tell him haha
# 2024-03-25 10:41 merch
m: ok so i made a thing
m: <<https://cdn.discordapp.com/attachments/1/2601/crab_shirt_mockup.png>>
s: is that
s: a low tide club shirt
m: with the crab
m: yes
m: u can say no
m: but u can't say no
s: that's actually really good
s: the drummer wants one
m: the drummer has taste
p: I want one too!!
t: I'll buy one. Put me down for a large.
j: Medium. Don't tell anyone I bought band merch.
m: juno's buying merch 😭
m: everyone look at juno
j: I said don't tell anyone.
m: this is a group chat juno
m: that's the opposite of not telling anyone
# 2024-03-26 15:05 the grade
p: GRADES ARE OUT
p: I got an 88!!!!
m: an 88!!
m: priya!!
m: that's a b plus!!
p: It's an A minus with the curve!!
t: That's amazing, Priya. You worked so hard for that.
j: Congratulations. Deserved.
s: lets goooo
o: Well done, Priya! I knew the eggs would help.
p: I ate the eggs Ray haha
m: the eggs and the flashcards
m: and the salt and pepper shakers
m: it was a team effort
m: but mostly u
m: u did it
p: Thank you guys. I couldn't have done it without the study group ❤️
m: ❤️❤️❤️
m: i'm gonna frame it
m: not literally
m: maybe literally
# 2024-03-27 18:20 trip logistics
t: Cabin is booked for Friday April 5th, one night. Check-in at 3pm, check-out Saturday at 11.
t: I can fit four in my car. Ray, can you drive too?
o: Yes. I have room for two and the camping stove.
p: I'll ride with Ray! I want to hear about the herons
o: Finally, someone who wants to hear about the herons.
j: I'll go with Theo. I get carsick, so I need the front seat.
s: i'll go with theo too, i'll bring the aux cord
t: Sam, you control the music, but no seven-minute songs.
s: no promises
m: i'll go with ray and priya
m: heron car
m: heron car rise up
p: Heron car!!
t: Food: I'll do a grocery run Thursday. Everyone send me what they want. Budget is about $15 each.
j: Pasta stuff, and coffee. Real coffee.
p: Stuff for s'mores please!
s: hot dogs for the fire
o: I'll bring eggs and potatoes for breakfast. I make a good skillet.
m: marshmallows
m: like a lot of marshmallows
m: a concerning amount
t: Define concerning.
m: three bags
t: Two bags.
m: fine
m: two big bags
# 2024-03-28 23:55 insomnia
m: can't sleep again
m: thinking about how geese can live like 20 years
m: that goose could outlive my lease
j: Why are you awake?
m: why are you awake
j: Work deadline. I'm fixing a spreadsheet that someone else broke.
m: that's so villain origin story
j: It really is. Someone typed "N/A" into a column of numbers.
m: no
m: not the n/a
j: Four hundred rows of it.
m: i'm so sorry juno
m: i'd help but i think excel can smell fear
j: It's fine. Ten more minutes. Go to sleep.
m: u go to sleep
j: I will after ten minutes.
m: ok gn juno
m: ur doing great
j: Thanks. Good night.
# 2024-03-29 12:08 theo's interview
t: Small news: I have a final-round interview on Tuesday. Backend role at a logistics company.
s: theo!! congrats
p: That's so exciting! You'll do great
o: Proud of you, kid. Wear the blue shirt.
t: Ray, I'm 27.
o: You'll always be a kid to me. Wear the blue shirt.
j: What's the interview like? Coding, or system design?
t: System design in the morning, then a chat with the team lead. They said to expect a question about queues.
j: Talk about what happens when things fail. Retries, backoff, idempotency. They always want that.
t: That's helpful, thank you.
m: idempotency is such a pretty word
m: i don't know what it means
m: but it sounds like a flower
j: It means doing the same thing twice has the same result as doing it once.
m: like me telling theo he's gonna do great
m: i can say it a hundred times
m: still true
t: Thank you, Mossy.
# 2024-03-30 19:30 jackbox night
t: Jackbox tonight at 8, on Discord. I'll stream the screen. No need to come over.
p: I'm in! Just finishing dinner
s: in
o: I am ready. I have read the instructions twice.
j: The instructions are "type something funny", Ray.
o: I wanted to be prepared.
~ 35m
t: Stream is up. Room code is on the screen.
m: i'm in
m: my name is goosemom
s: mine is crabfan
p: I'm "88 percent"
j: I'm "juno". Some of us are adults.
o: I could not figure out the name part. I am "RAY RAY RAY".
m: ray ray ray 😭
m: i love him
~ 1h 15m
s: ray winning quiplash was not on my bingo card
t: Ray, how are you this funny when you type in full sentences?
o: It is a gift.
j: His answer about the goose got every vote. Including mine.
m: "the goose is simply a landlord with wings"
m: i'm putting that on a shirt
m: next to the crab
p: This was so fun. Same time next week?
t: Maybe the week after the trip. Good night all.
# 2024-04-01 08:30 april fools
m: guys i have bad news
m: the goose bit me
m: like actually
m: i'm at urgent care
p: WHAT
p: Mossy are you okay??
t: Are you serious? Where did it bite you?
o: Geese do not usually break the skin. Is it bleeding? Keep it clean.
j: What's today's date?
m: ...
m: april fools 😭
p: MOSSY
p: I was about to call you!!
t: I was putting on my shoes.
o: I had the first aid kit out. Biscuit was concerned as well.
m: i'm so sorry
m: i didn't think it would work
m: i didn't think anyone would believe the goose would bite me
j: You've told us about the goose every day for a month. Of course we believed it.
m: ok fair
m: the goose is my whole personality now
s: you got me too ngl
m: sam said ngl
m: sam is becoming me
s: no
# 2024-04-02 17:20 interview debrief
t: The interview went well, I think. The system design question was about a delivery queue and I talked about retries for twenty minutes.
j: Did you say idempotency?
t: Three times. The interviewer nodded every time.
j: Good. That's the magic word.
p: When do you hear back?
t: End of the week, maybe Monday.
o: You wore the blue shirt?
t: I wore the blue shirt.
o: Then you'll get it.
s: fingers crossed theo
m: the blue shirt never fails
m: the blue shirt is like ray's dice
m: lucky
t: Let's hope it's luckier than the dice were for you.
m: rude
m: accurate
m: but rude
# 2024-04-03 20:45 packing list
t: Packing list for Friday:\n- sleeping bag or blankets\n- warm layers, it gets to 35F at night\n- boots, the trail is muddy\n- a flashlight\n- whatever you want to drink
p: Is there a shower?
t: Yes. Small, but hot water.
j: Is there Wi-Fi?
t: No. That's the point.
j: I'm going to die.
s: i'm bringing my guitar
p: Yes!! Campfire songs!
o: I know all the words to "Country Roads". All of them.
j: There are like four words in the chorus.
o: And I know all of them.
m: ok what's a flashlight
m: like a phone?
t: A real flashlight, Mossy. Your phone will die.
m: my phone has never died
m: i have a power bank
m: it's shaped like a cat
t: Bring the cat and a flashlight.
m: fine
m: the cat and a flashlight
m: and three bags of marshmallows
t: Two.
m: worth a try
# 2024-04-04 21:15 night before the trip
p: I'm so excited I can't sleep
s: same, i packed my guitar like 3 times
j: I packed a book and a charger I won't be able to use.
t: Meet at my place at 1pm tomorrow. Ray picks up Priya and Mossy at 12:45.
o: I will be there at 12:40. I like to be early.
m: ray 12:40
m: i'll be there at 12:44
m: i like to be almost late
p: I'll drag her out of bed if I have to
m: pls do
m: i believe in u
# 2024-04-05 12:41 road trip
o: I am outside Priya's building.
p: Coming down now!
m: i'm awake
m: i'm mostly awake
m: i'm putting on shoes
o: It is 12:41, Mossy. We will be at your place in five minutes.
m: ok ok
m: the cat power bank is packed
m: and the flashlight
m: i'm a responsible adult
~ 1h 10m
s: theo's car update: juno is asleep, i'm on song 14 of my road trip playlist
t: And none of them have been under seven minutes.
s: prog rock is a lifestyle
j: I'm not asleep. I'm resting my eyes because of your music.
m: heron car update
m: we saw a heron
m: ray pulled over
m: we watched it for ten minutes
m: it did nothing
m: ray said it was the best ten minutes of his week
o: It was a great blue heron. It was fishing. Very patient animal.
p: It was honestly kind of beautiful
m: it was beautiful
m: i get the heron thing now
m: i'm a heron person
o: Welcome.
# 2024-04-05 15:20 at the cabin
t: We're here! Cabin is even nicer than the photos. <<https://cdn.discordapp.com/attachments/1/2701/cabin_front.jpg>>
s: the lake is right there
p: There's a dock!! With chairs!!
j: There's no signal in the bedroom. I'm going to have to talk to people.
m: we're like 5 min out
m: ray is driving at exactly the speed limit
m: the whole time
o: That is the law, Mossy.
m: i love u ray
~ 20m
m: ok we're here
m: guys
m: guys
m: there's a goose
m: on the dock!!
j: No.
m: yes
m: there's a goose on the dock <<https://cdn.discordapp.com/attachments/1/2702/dock_goose.jpg>>
t: She followed you here.
m: she didn't follow me
m: it's a different goose
m: right??
o: Different goose. This is a lake goose. Your goose is a city goose.
m: ok good
m: a lake goose
m: she's not even looking at me
m: i'm gonna say hi
p: Mossy do not say hi to the goose
m: too late
m: she nodded
m: i think we're cool
s: mossy has made peace with geese. the arc is complete
# 2024-04-05 21:40 the campfire
p: s'mores count so far: Mossy 6, me 3, Theo 2, Sam 1, Juno 0, Ray 1
j: I don't like marshmallows. I'm here for the fire.
t: Sam's playing Wonderwall. Someone stop him.
s: it's a classic
o: Next is "Country Roads". I have been waiting all day.
m: ray knows all the words
m: all of them
m: we're all singing
m: juno is singing
m: i have video proof <<https://cdn.discordapp.com/attachments/1/2703/campfire.mp4>>
j: That was a weak moment and you know it.
m: it was a beautiful moment
m: u have a nice voice juno
j: ...thank you.
m: she said thank u
m: everyone screenshot this
p: It's so dark out here. I've never seen this many stars
o: That band across the sky is the Milky Way. You can only see it away from city lights.
t: This was a good idea. I'm glad we did the small cabin.
j: Me too. Thanks for finding it.
m: the group is so healed
m: i'm crying
m: it's the smoke
m: and the love
# 2024-04-06 08:15 breakfast
o: Breakfast is ready. Eggs, potatoes, peppers. Coffee is on the counter.
j: Real coffee?
o: Real coffee, Juno. Ground it myself.
j: Ray, I'd die for you.
p: This skillet is amazing Ray
t: Best breakfast I've had in a long time.
s: can you adopt me
o: I already have Biscuit. But you may visit.
m: i'm awake
m: is there food left
m: pls say there's food left
p: We saved you a plate!
m: ur all angels
m: i slept so good
m: the cabin bed is a cloud
t: Check-out is at 11. Let's start packing after we eat.
m: noooo
m: five more minutes of cabin
m: five more hours
# 2024-04-06 10:02 the dock
s: mossy is on the dock with the goose again
m: we're friends now
m: i gave her a name
m: her name is linda
j: Why Linda?
m: she looks like a linda
m: look at her
m: she has linda energy
o: I think that is the best name anyone has given a goose.
t: Five minutes, then we pack the cars.
m: bye linda
m: i'll miss u linda
m: she honked
m: she'll miss me too
# 2024-04-06 16:30 home again
t: Home. Thank you all for a great trip.
p: Home too! I'm already sad it's over
j: Home. I have signal again and I'm weirdly not happy about it.
m: juno misses nature
m: juno is a nature girl now
j: Don't tell anyone.
m: it's the group chat juno
m: we've been over this
s: best trip ever. photos from my phone <<https://cdn.discordapp.com/attachments/1/2801/trip1.jpg,https://cdn.discordapp.com/attachments/1/2801/trip2.jpg,https://cdn.discordapp.com/attachments/1/2801/trip3.jpg>>
o: Thank you for including an old man. I had a wonderful time. Biscuit smelled the campfire on my jacket and was very jealous.
m: ray ur not old
m: ur vintage
o: I'll take it.
t: !Pinned a message.
t: Pinned Sam's photos.
# 2024-04-08 09:30 theo's news
t: I got the job!!
p: THEO!!!
s: let's gooo
o: The blue shirt. I told you.
j: Congratulations. You earned it.
m: theo!!
m: the blue shirt!!
m: i'm so proud of u
m: we have to celebrate
m: noodles?
m: big noodles?
t: Big noodles on Friday. I'm paying.
m: theo paying 😭
m: rich man theo
m: the job hasn't even started and he's rich
t: I'm not rich, I'm employed.
m: same thing to me
j: When do you start?
t: April 22nd. Two weeks to finish things up at the old job.
p: We should have one more game night before you get busy!
t: Catan rematch. Ray brings the lucky dice.
m: no!!
m: the dice are banned
o: The dice come with me. We are a package.
m: ray and the dice
m: a package deal
m: fine
# 2024-04-09 19:05 juno's ceiling
j: My ceiling is dripping. Not a lot. Just enough to be upsetting.
t: Did you tell your landlord?
j: I emailed. He replied "will look into it" which means nothing.
o: Put a bucket under it and take photos with the date visible. If it gets worse, you'll want a record. Also check whether the drip is near a light fixture. If it is, turn off that breaker.
j: It's near the smoke detector. Is that bad?
o: Not dangerous by itself, but water in a detector can make it chirp or fail. Take the battery out tonight and put a new one in once it's dry. Tell the landlord it's a safety issue, in writing. They move faster for that.
j: Ray, you're the most useful person I know.
o: I owned a very old house for thirty years. Everything broke at least twice.
p: That sounds stressful Juno, I'm sorry
s: you can crash at mine if it gets bad
j: Thanks, Sam. It's fine for now. The bucket is doing its job.
m: name the bucket
j: No.
m: it's doing so much for u
m: it deserves a name
j: Fine. The bucket is called Gerald.
m: gerald!!
m: gerald the bucket
m: protector of the smoke detector
t: Update us tomorrow about Gerald.
# 2024-04-10 13:25 priya's resume
p: Can someone look at my resume? I'm applying for a summer research internship and I have no idea if it's good <<https://cdn.discordapp.com/attachments/1/2901/Priya_Kumar_Resume.pdf>>
t: Sure. First thing: put the lab experience above the cafe job. That's what they care about.
j: Your bullet points say what you did. Say what happened because of it. "Ran 40 titrations" is fine. "Ran 40 titrations for a study on water quality" is better.
p: That makes sense. I never know how much to brag
j: Brag. Nobody else will do it for you.
t: And add the orgo grade. An A minus after a hard midterm is worth mentioning.
p: Is that weird? Putting a grade on there?
o: Not weird. When I hired people, a good grade in a hard class told me they could work.
s: you also tutored kids for two years right? put that on
p: I forgot about that! Adding it
m: also add
m: "survived the goose era"
m: shows resilience
p: Haha I'll leave that one off
m: ur loss
m: it's a strong bullet point
p: Okay I updated it. Thank you all so much, this is so much better now
# 2024-04-11 20:50 the ep
s: so the band is recording an EP next month. 4 songs
t: That's huge, Sam!
s: we put a demo of one of them up. it's rough but https://lowtideclub.bandcamp.com/track/harbor-lights-demo
p: Harbor Lights!! This is the one from the gig!
j: This is really good, Sam. The part where the guitar drops out is great.
o: The bass line is lovely. Very warm. Reminds me of records I listened to in the seventies.
s: ray that's the biggest compliment
m: sam
m: this is the best thing i've ever heard
m: it's going on sad girl walk 5
s: there's a 5 now?
m: there's always a 5
m: when the music is this good
t: Can we buy it when it's out?
s: it'll be pay what you want on bandcamp
j: I will pay a normal amount. Not a Mossy amount.
m: what's a mossy amount
j: A hundred dollars and a crab drawing.
m: ok that's fair
# 2024-04-12 18:40 big noodles
t: Table for six at the place on 5th, 7pm. My treat.
p: On my way!
o: Running ten minutes late. Biscuit got into the trash. Do not ask.
j: I'm asking.
o: Chicken bones. He is fine. I am not.
s: at the door, they gave us the big round table
m: i'm on the bus
m: the bus is early for once
m: it's a sign
m: big noodle energy
~ 2h 10m
t: Thanks for coming tonight, everyone. I'm going to miss seeing you all on weekdays.
p: We'll still see you on weekends! Congrats again Theo
j: Congratulations. Thank you for dinner.
m: those noodles were bigger than last time
m: i think they upgraded
m: noodles 2.0
o: Like my dip.
m: exactly like ur dip ray
# 2024-04-13 18:45 catan rematch
t: Catan rematch tonight, 7pm. Ray's dice are allowed, by popular demand.
m: by ray's demand
m: ray is not popular
m: ray is one guy
o: I am one very popular guy.
j: He got every vote at Jackbox.
m: ok that's fair
p: I'm bringing brownies again
s: i'll bring drinks. pink lemonade for mossy
m: sam remembered 😭
m: sam ur my favorite
j: You said I was your favorite on Tuesday.
m: u were
m: it changes weekly
~ 1h 30m
p: Update: Mossy has the sheep port again
t: Of course she does.
j: Mossy has nine sheep. Ray has the longest road again.
m: ray stop
m: ray stop building roads
o: I'm building toward the coast. It's for the view.
m: the view is my sheep
~ 1h
s: mossy won
s: mossy actually won
p: SHE WON with 11 sheep and 2 cities
m: i won
m: i won i won i won
m: the sheep were worth it
m: i told u
m: the sheep are family
t: Fine. You were right about the sheep.
m: can i get that in writing
t: It is in writing. This is a chat.
m: screenshotting
m: framing it
m: next to priya's grade
# 2024-04-14 13:15 pineapple
s: hot take: pineapple on pizza is good
j: It's not a hot take. It's just wrong.
p: I actually like it!
t: It's fine. Not my first choice.
j: Fruit does not belong on pizza. Tomatoes are the only exception.
o: Tomatoes are a fruit, so you have already lost this argument.
j: Ray. I'm begging you.
s: ray with the facts again
p: So Juno agrees fruit is fine on pizza haha
j: I agree to nothing.
m: i like pineapple pizza
m: but only with jalapeños
m: sweet and spicy
m: like me
j: You are neither.
m: rude
m: i'm so sweet
t: Next game night: half pineapple, half pepperoni. Everyone wins.
j: Nobody wins. But fine.
# 2024-04-15 07:55 heron
o: Good morning. I saw the heron from the trip at the pond by my house. Or one like it. <<https://cdn.discordapp.com/attachments/1/3001/heron_pond.jpg>>
p: Oh it's beautiful! Look at its neck
t: How early were you up, Ray?
o: Five thirty. Biscuit wakes me up. It's the only good thing about it.
m: ray
m: i'm a heron person now
m: i need u to know that
m: this is the best photo
o: Thank you, Mossy. Herons are patient. They stand still for a long time and then they get exactly what they want.
m: that's my whole plan for life
m: stand still
m: get what i want
j: You have never stood still in your life.
m: i'm starting today
# 2024-04-16 20:05 what to watch
p: I need a show to watch while I do lab reports. Something I don't have to look at all the time.
t: The Great British Baking Show. It's calm and nobody is mean.
j: Agreed. Low stakes, nice people, cake.
s: or a cooking competition where they're mean. more fun
p: I think I want calm haha
o: I watch the nature documentaries. You can listen to them without watching.
m: ray and his birds
m: i love it
m: u should watch the bake off priya
m: the tent is so cozy
m: and i cry every time someone's cake collapses
p: You cry at everything Mossy
m: i know
m: it's a skill
t: Start with season 3. That's the best one.
j: Season 4 is the best one.
t: Season 3.
j: We are not doing this again.
p: I'll start with season 3 and report back!
# 2024-04-17 16:40 internship interview
p: I got an interview for the research internship!!!
t: Priya! That's great!
j: The resume worked.
s: congrats!!
o: Wonderful news. When is it?
p: Next Tuesday, on Zoom. It's with the professor who runs the lab. I'm terrified
t: Read two of her recent papers, just the abstracts and the figures. Ask one question about each.
j: And have a story ready about a time something went wrong in lab and what you did about it.
p: The beaker!!
j: Maybe a different story.
m: no the beaker story is good
m: it shows u can handle pressure
m: everyone turned around and u survived
p: Haha okay I'll think about it
m: @priya.k u got this
m: u literally got an a minus in orgo
m: u can talk to one professor
p: Thank you Mossy ❤️
# 2024-04-18 11:20 the bakery
m: work update
m: i made my first full batch of bagels by myself
m: and none of them are weird shapes <<https://cdn.discordapp.com/attachments/1/3101/bagels_tray.jpg>>
t: Those look better than the ones at the store.
p: Oh they look so good!! Save me one
j: Are these the same bagels the goose wanted?
m: juno
m: these bagels are the reason for everything
m: the goose knew
m: she could tell they were going to be good
s: so the goose was right
m: the goose was always right
o: What kind did you make?
m: everything bagels
m: and one cinnamon raisin for my boss
m: she likes the weird ones
o: Cinnamon raisin is not weird. It is a classic.
m: ray ur such a boss
m: like literally u would get along with her
# 2024-04-19 18:10 goslings update
m: the goslings are so big now
m: i went to the park
m: the mom goose looked at me
m: and did not hiss
m: we're on good terms
j: After a month. This is the longest truce in history.
t: Did you bring a bagel?
m: no bc i'm not stupid
m: i brought peas
m: ray said peas
o: Frozen peas, thawed. Much better for them than bread.
p: Mossy feeding geese peas is the most wholesome thing I've heard all week
m: they loved them
m: the little ones fought over one pea
m: it was like catan but with peas
s: who got the longest road
m: the smallest one
m: he's a ray
o: I am honored.
# 2024-04-20 14:30 bad news
s: so our drummer is moving to portland in june
t: Oh no, Sam. What happens to the EP?
s: we're still recording it before he leaves. after that i don't know
p: I'm sorry Sam, that's hard
j: You'll find another drummer. You're good, and people want to play with good people.
o: I played bass in a band in 1978. We went through four drummers. Drummers come and go. The songs stay.
s: thanks ray. that actually helps
m: sam
m: the crab believes in u
m: the crab has seen u on stage
m: the crab knows
s: thanks mossy
m: also i can learn the drums
m: how hard can it be
j: Very.
m: ok i'll learn the tambourine
s: we'd take a tambourine honestly
# 2024-04-21 10:05 the last sunday
t: Last free Sunday before my new job starts. Anyone want to do brunch?
p: Yes please
j: I'll come if there's real coffee.
s: i'm in, 11?
o: I'll bring Biscuit if it's outdoors.
t: The place with the patio on Elm. 11:30, so Ray can bring Biscuit.
m: biscuit brunch
m: the best kind of brunch
m: i'm bringing him a bagel
o: He can't have a bagel, Mossy.
m: a tiny one
o: No.
m: a bagel crumb
o: One crumb.
m: deal
# 2024-04-21 11:25 brunch
o: We're here, on the patio. Biscuit is under the table.
j: Coming from the parking lot.
p: Two minutes!
s: <<https://cdn.discordapp.com/attachments/1/3201/patio.jpg>>
t: Table by the heater, we grabbed it.
m: i'm here
m: where's biscuit
m: i see him
m: he's so big now
m: hi biscuit
o: He remembers you. His tail is going.
~ 1h 40m
p: That was such a nice brunch. Good luck tomorrow Theo!
j: Good luck, Theo. Don't let them make you the "Excel person".
t: Thank you, all of you. Seriously.
m: ur gonna be great
m: rich man theo
m: employed man theo
m: blue shirt theo
t: Thanks, Mossy.
m: biscuit ate the crumb btw
m: he loved it
o: I saw. He looked at me like I'd been hiding bagels from him his whole life.
# 2024-04-22 18:30 first day
t: First day done. Everyone was nice. I have a laptop, a badge, and four hundred passwords to set up.
j: Classic first day.
p: How was the team??
t: Small team. Five people. The lead seems calm. Someone brought donuts.
o: Donuts on the first day is a good sign. It means they like each other.
s: did they ask you about the queue stuff
t: Not yet. Today was "here is the coffee machine".
m: how is the coffee machine
t: Bad.
m: oh no
m: theo
m: bring ur own
m: juno can help u
j: I have opinions about coffee.
t: Everyone knows you do.
# 2024-04-23 15:10 priya's interview
p: Interview done!! She asked about my research interests and I talked about water quality for like ten minutes
t: That sounds great, Priya.
j: Did you tell the beaker story?
p: I DID. She laughed and said she broke a flask on her first day in the lab 30 years ago
m: the beaker story!!
m: i told u
m: the beaker story is a classic
p: You did tell me!! Thank you Mossy
s: so how do you think it went?
p: I think good? She said they'd decide next week
o: Fingers crossed, Priya. I'll ask the heron for luck.
m: and i'll ask the goose
m: between the two birds
m: u can't lose
# 2024-04-24 22:15 the end of a long day
m: long day
m: the oven broke at work
m: we had to do everything in the small oven
m: i made 200 bagels in a toaster basically
j: That's a lot of bagels in a small oven.
m: it was so much
m: my arms are noodles
m: big noodles
s: go to bed mossy
m: i'm in bed
m: i'm typing from bed
m: this is bed typing
p: Sleep well! You deserve it
m: thank u
m: gn everyone
m: love, mossy
o: Good night, Mossy. Love, Ray.
# 2024-04-25 19:30 the voice channel
s: !Started a call that lasted 1,204 minutes.
j: Sam. The call lasted twenty hours.
s: i fell asleep in the voice channel while the band was jamming. my laptop just kept going
t: So we all heard you snore at 4am?
s: nobody was there at 4am
o: I was. I wake up early. It was peaceful, like a very slow song.
p: Ray listened to Sam sleep haha
o: I listened to the birds outside his window. He has a nice window.
s: this is the most embarrassing thing that's happened to me in this server
m: no the most embarrassing thing is ur eyes watering at my chips
s: they were spicy chips mossy
# 2024-04-26 12:50 the internship
p: I GOT IT!!! I got the internship!!!
t: PRIYA!!
j: Told you. Brag more.
s: lets gooooo
o: Congratulations, Priya. The heron came through.
p: Ten weeks in the water quality lab, starting June 3rd. And it's paid!!
m: priya!!
m: paid!!
m: the beaker story got u a job
p: The beaker story and the resume help from all of you
t: We need to celebrate this. Another dinner?
j: Something cheaper than big noodles. I'm still recovering from the cabin.
m: picnic!!
m: at the goose park
m: i'll bring bagels
m: everyone bring one thing
p: A picnic sounds perfect
t: Sunday, 2pm, goose park. I'll bring a blanket.
o: I'll bring lemonade. Pink, for Mossy.
m: ray 😭😭
m: everyone keeps remembering the pink lemonade
m: i'm so loved
# 2024-04-27 10:20 juno's ceiling, resolved
j: Update on Gerald: the landlord fixed the roof. The drip is gone.
m: gerald is retired??
j: Gerald is retired. He's back under the sink.
t: Finally. That took almost three weeks.
j: I sent the "safety issue" email Ray told me to send. They came two days later.
o: Works every time.
p: Ray has solved every problem in this chat honestly
o: Not the pizza one.
j: You made the pizza one worse, Ray.
m: rip gerald's career
m: he did his best
j: He was a good bucket.
# 2024-04-28 13:40 the picnic
t: I'm at the park, under the big oak, with the blue blanket.
p: I see you! Coming
s:   parking is terrible, circling the block  
o: I found a spot on Maple Street. It's a short walk.
j: I brought real coffee in a thermos. Nobody touch it.
m: i'm here
m: i brought 12 bagels
m: don't tell the goose
~ 30m
t: The goose is here.
p: She's walking toward us
m: it's fine
m: we're friends
m: i have peas
j: You brought peas to a picnic?
m: i always have peas now
m: it's my brand
o: She is bringing the goslings. Everyone keep your bagels close.
s: this is like a nature documentary
m: and here we see the goose family
m: approaching the bagels
m: the humans do not know what is coming
p: Mossy is doing the voice again haha
~ 1h 15m
t: Good picnic. Nobody got chased.
j: A miracle.
m: the goose ate all my peas
m: and left
m: no hiss
m: i think she likes me now
o: She trusts you. It took a month and a lot of peas.
m: that's the most beautiful thing anyone has ever said to me
# 2024-04-29 20:10 summer plans
t: Now that things have calmed down, what does everyone want to do this summer?
p: I have the internship from June to August, so weekends only for me
s: the band might play a festival in july. small one, but still
j: I want to go back to the lake. Same cabin. Two nights this time, I'll have the money.
t: That's a great idea. I'll look at dates in August.
o: I would like to teach everyone to fish. It is very relaxing.
j: Is it? It seems like a lot of waiting.
o: That is the relaxing part.
p: I'd try fishing! Only if we let them go though
o: Of course. Catch and release.
m: i want to visit linda
m: the lake goose
m: does she remember me
o: Geese do remember faces. Especially the people who feed them.
m: i'm bringing peas to the lake
m: linda will know
s: should we also do the festival? it's july 20th
t: Yes. Put it in the calendar. Everyone: July 20th, festival. August, lake.
j: A plan. An actual plan. In this chat.
t: It happens.
# 2024-04-30 16:55 ray's advice
p: Random question: Ray, how did you decide what to do after school? I'm thinking about grad school and I keep going back and forth
o: I did not decide, honestly. I took the first job I was offered, in a water treatment plant, and I stayed thirty years because I liked the people. The work became interesting because they were interesting.
p: Water treatment!! I didn't know that. That's what my internship is about
o: I know. Theo told me. I was going to tell you at the picnic, but the goose took all the attention.
t: Ray knows everything about water. Ask him about chlorine.
o: Later. My advice, Priya: try the internship, see if you like the questions, not only the answers. If you like the questions, grad school might be for you.
p: That's really helpful. Thank you Ray
j: Ray should have a podcast.
s: i'd listen
m: ray's podcast
m: episode 1: herons
m: episode 2: water
m: episode 3: how to win catan with lucky dice
o: Episode 3 is a secret.
# 2024-05-01 09:15 may
m: it's may
m: how is it may
m: i just got used to march
t: Time flies when you're being chased by geese.
m: theo made a goose joke
m: everyone look
m: theo made a joke
j: It was a decent joke.
m: juno said decent
m: this is a historic day
p: Happy May everyone!
s: happy may
o: Happy May. The herons are nesting now. I'll post photos.
m: pls do ray
m: heron content is my favorite content
# 2024-05-02 18:25 the ep is done
s: we finished recording the ep today. all four songs
t: Sam! How does it sound?
s: honestly better than i hoped. our drummer played the best he's ever played. i think because it's his last thing with us
p: That's bittersweet. When can we hear it?
s: mixing takes a few weeks. early june probably
j: Put it out before he leaves, so he gets to see people hear it.
s: that's the plan
o: Send me the file when it's done. I'll play it on my good speakers. Biscuit likes music with bass.
m: sam
m: i'm so proud of u
m: the crab is so proud of u
m: i'm making a shirt for the ep
s: what's the ep called
m: i don't know yet
m: u tell me
s: "Low Tide, High Hopes"
j: That's corny, Sam.
s: it's supposed to be corny
m: i love it
m: it's going on the shirt
# 2024-05-03 21:00 a quiet friday
t: Quiet Friday. Anyone doing anything?
j: Reading. I finished the book I brought to the cabin. It was good, actually.
p: Lab reports. Forever lab reports
s: writing a new song. about a goose, weirdly
m: what!!
m: sam
m: a goose song??
s: it's not about your goose. it's about a goose in general
m: every goose is my goose now
o: I am watching a documentary about owls. Very dramatic.
j: Ray, is there any bird you don't like?
o: Pigeons. They know what they did.
t: What did the pigeons do?
o: A long story, involving a sandwich, in 1991.
p: We need this story
o: Another day.
m: ray and the pigeon
m: episode 4 of the podcast
# 2024-05-04 11:45 the end of the semester
p: Last final is done. I'm officially on summer break until June 3rd!!
t: Congrats, Priya! You made it.
j: The whole semester. Exam, interview, internship. That's a lot.
s: you earned a month of nothing
o: Rest well. Sleep. Eat things that are not from a vending machine.
p: I'm going to sleep for two days and then watch all of season 3 of Bake Off
t: Season 3. Good choice.
j: Season 4.
t: Not again.
p: I'll watch both haha
m: priya
m: u did so good this semester
m: from flashcards to internship
m: i'm so proud of u
p: I couldn't have done it without you Mossy. The dramatic flashcard voice is the reason I passed
m: i'll put that on my resume
m: "dramatic voice, expert level"
j: Finally, a real skill.
m: rude
m: but i'll take it
# 2024-05-05 15:30 a group photo
t: Someone should make a group photo album of this spring. We did a lot.
j: The cabin, the gig, game night, the picnic. And the goose, I suppose.
s: i can make a shared folder
p: Yes! I have so many photos from the gig
o: I have mostly bird photos. Are those allowed?
t: Of course, Ray.
s: folder is up: https://photos.app.goo.gl/LowTideSpring2024
p: Uploading now!
j: I added the campfire video. Sorry, Juno of the past.
o: I added Biscuit in the bandana. For morale.
t: This is great. Thank you, Sam.
m: i added the goose photos
m: all 47 of them
j: 47?
m: it's a historical archive juno
m: future generations need to know
s: it's a good archive
t: Same time next spring?
p: Same time every spring!
o: I'll be there. With the dice.
m: with the dice
m: love, mossy
s: love, sam
"""

HEADER = re.compile(r"# (\d{4}-\d\d-\d\d \d\d:\d\d) (.+)$")
GAP = re.compile(r"~ (?:(\d+)h)? ?(?:(\d+)m)?$")
ATTACH = re.compile(r" ?<<(.+?)>>")
REACT = re.compile(r" ?\{\{(.+?)\}\}")


def eastern(local):
    """US Eastern in 2024 as the exporting machine wrote it: -05:00 until 2024-03-10 02:00."""
    dst = local >= datetime.datetime(2024, 3, 10, 2, 0)
    return datetime.timezone(datetime.timedelta(hours=-4 if dst else -5))


def parse_threads():
    """[(title, local start, [item])], item = ("gap", seconds) or ("msg", code, text)."""
    threads = []
    for line in THREADS.split("\n"):
        if not line.strip():
            continue
        if m := HEADER.match(line):
            threads.append((m.group(2), datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M"), []))
        elif m := GAP.match(line):
            threads[-1][2].append(("gap", 3600 * int(m.group(1) or 0) + 60 * int(m.group(2) or 0)))
        else:
            code, sep, text = line[0], line[1:3], line[3:]
            assert code in AUTHORS and sep == ": ", f"bad line {line!r}"
            threads[-1][2].append(("msg", code, text))
    return threads


def lay_out(threads, n, seed):
    """The messages with their instants (UTC): (aid, name, t, text, attach, react, kind)."""
    rng = random.Random(seed)
    first = threads[0][1].replace(tzinfo=eastern(threads[0][1]))
    last = threads[-1][1].replace(tzinfo=eastern(threads[-1][1]))
    cycle = (last - first) + datetime.timedelta(days=7)  # --messages beyond the threads: repeat, later
    msgs, prev_end, k = [], None, 0
    while len(msgs) < n:
        renamed = False
        for title, local, items in threads:
            renamed = renamed or title == RENAME_THREAD
            t = local.replace(tzinfo=eastern(local)).astimezone(datetime.timezone.utc) + k * cycle
            if prev_end is not None and t < prev_end + datetime.timedelta(minutes=15):
                t = prev_end + datetime.timedelta(minutes=15)  # threads never overlap
            t += datetime.timedelta(seconds=rng.randint(0, 59))
            prev_code = None
            for item in items:
                if item[0] == "gap":
                    t += datetime.timedelta(seconds=item[1])
                    prev_code = None
                    continue
                _, code, text = item
                if prev_code is not None:
                    if code == prev_code:  # a burst: the next line a few seconds later
                        s = rng.uniform(2, 8) + 0.12 * len(text)
                    else:
                        s = rng.uniform(10, 50) + 0.2 * len(text)
                    t += datetime.timedelta(seconds=min(s, 200))
                t += datetime.timedelta(microseconds=rng.randint(0, 999999))
                prev_code = code
                aid, name = AUTHORS[code]
                if code == "m" and renamed:
                    name = PERSONA_LATER
                attach = react = ""
                if m := ATTACH.search(text):
                    attach, text = m.group(1), ATTACH.sub("", text)
                if m := REACT.search(text):
                    react, text = m.group(1), REACT.sub("", text)
                elif rng.random() < 0.04:
                    react = rng.choice(["😭 (2)", "💀 (3)", "👍 (1)", "❤️ (2),😂 (1)", "🪿 (4)"])
                kind = "Default"
                if text.startswith("!"):
                    text, kind = text[1:], "System"
                msgs.append((aid, name, t, text.replace("\\n", "\n"), attach, react, kind))
                if len(msgs) == n:
                    return msgs
            prev_end = t
        k += 1
    return msgs


def dce_date(t):
    local = t.astimezone(eastern(t.astimezone(datetime.timezone(datetime.timedelta(hours=-5))).replace(tzinfo=None)))
    off = local.utcoffset()
    sign = "-" if off < datetime.timedelta(0) else "+"
    m = abs(int(off.total_seconds())) // 60
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0{sign}{m // 60:02d}:{m % 60:02d}"


def q(s):
    return '"' + s.replace('"', '""') + '"'


def write_csv(msgs, out, crlf):
    nl = "\r\n" if crlf else "\n"
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("AuthorID,Author,Date,Content,Attachments,Reactions" + nl)
        for aid, name, t, text, attach, react, _ in msgs:
            f.write(",".join([q(aid), q(name), q(dce_date(t)), q(text), q(attach), q(react)]) + nl)


def write_json(msgs, out):
    def js(x):  # DCE escapes non-ASCII, so emoji come out as UTF-16 surrogate pairs
        return json.dumps(x, ensure_ascii=True)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write('{\n  "guild": {"id": "1", "name": "Sample Guild", "iconUrl": ""},\n')
        f.write('  "channel": {"id": "2", "type": "GuildTextChat", "category": "Text", "name": "general", "topic": null},\n')
        f.write('  "dateRange": {"after": null, "before": null},\n  "exportedAt": "2024-06-01T00:00:00-04:00",\n')
        f.write('  "messages": [')
        for i, (aid, name, t, text, attach, react, kind) in enumerate(msgs):
            if kind == "System":
                kind = {"Pinned": "ChannelPinnedMessage", "Joined": "GuildMemberJoin",
                        "Started": "Call", "Changed": "ChannelNameChange"}[text.split()[0]]
            disc = "0000"
            if "#" in name:
                name, disc = name.split("#")
            ts = dce_date(t)
            frac = ts[20:27].rstrip("0")
            ts = ts[:19] + ("." + frac if frac else "") + ts[27:]
            reactions = []
            for r in filter(None, react.split(",")):
                emoji, count = r.rsplit(" (", 1)
                reactions.append({"emoji": {"id": "", "name": emoji, "code": "", "isAnimated": False,
                                            "imageUrl": ""}, "count": int(count.rstrip(")")), "users": []})
            m = {"id": str(10**17 + i), "type": kind, "timestamp": ts, "timestampEdited": None,
                 "callEndedTimestamp": None, "isPinned": False, "content": text,
                 "author": {"id": aid, "name": name, "discriminator": disc, "nickname": name,
                            "color": None, "isBot": aid == BOT_ID, "roles": [], "avatarUrl": ""},
                 "attachments": [{"id": str(9000 + j), "url": u, "fileName": u.rsplit("/", 1)[-1],
                                  "fileSizeBytes": 1} for j, u in enumerate(filter(None, attach.split(",")))],
                 "embeds": [], "stickers": [], "reactions": reactions, "mentions": [], "inlineEmojis": []}
            f.write(("," if i else "") + "\n    " + js(m))
        f.write("\n  ],\n  \"messageCount\": %d\n}\n" % len(msgs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=None, help="default: the written threads, once")
    ap.add_argument("--seed", type=int, default=20240301)
    ap.add_argument("--format", choices=["csv", "json"], default="csv")
    ap.add_argument("--crlf", action="store_true")
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    threads = parse_threads()
    n = a.messages or sum(1 for _, _, items in threads for it in items if it[0] == "msg")
    msgs = lay_out(threads, n, a.seed)
    if a.reverse:
        msgs.reverse()
    if a.format == "csv":
        write_csv(msgs, a.out, a.crlf)
    else:
        write_json(msgs, a.out)


if __name__ == "__main__":
    main()
